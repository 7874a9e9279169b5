"""Default config: the Flax+Optax MNIST tutorial's MLP, modernised.

784-512-512-10 with Dropout 0.3/0.4 and BatchNorm after each hidden layer, Adam
with a warmup + cosine schedule. Reaches ~98.6-98.7 % test accuracy on MNIST.
"""

import ml_collections


def get_config():
  """Returns the default hyperparameter configuration."""
  config = ml_collections.ConfigDict()

  # Task (trainkit/tasks): 'classification' (class logits, cross-entropy,
  # accuracy), 'binary' (one logit for P(y = 1): log loss, ROC-AUC, PR-AUC,
  # accuracy), 'regression' (real targets) or 'mixture_density' (a mixture
  # of Gaussians over the target, for targets with several likely values).
  config.task = 'classification'
  config.regression_loss = 'nll'  # regression: 'nll' (a mean and a std-dev) or 'mse' (a mean).
  config.num_components = 5  # mixture_density: Gaussian components.
  config.threshold = 0.5  # binary: rows with P(y = 1) >= threshold are predicted 1.
  # binary on a table: the class whose probability is predicted ('' = the
  # class name that sorts last, e.g. '1' of 0/1 or 'yes' of no/yes).
  config.positive_class = ''
  # Class weights in the training loss (classification, binary): '' = none;
  # 'balanced' = n / (classes * rows of the class), from the training split;
  # or one weight per class ('1,5'). The loss is sum(w * loss) / sum(w).
  config.class_weight = ''

  # Data.
  # A TFDS dataset name (e.g. 'mnist': 28x28 grey images + labels); a .npz
  # file of arrays 'x' (features) and 'y' (targets), or 'x_<split>' and
  # 'y_<split>' per split (a lone 'x', 'y' pair is the split 'train');
  # or 'synthetic:<name>', a generated dataset (trainkit/data/sources/synthetic.py).
  config.dataset = 'mnist'
  # Synthetic datasets: examples drawn for the 'train', 'validation' and
  # 'test' splits (each a fresh draw), and the seed they are drawn from.
  config.synthetic_examples = (3000, 1000, 1000)
  config.data_seed = 0
  # Tables: dataset='file.csv', 'file.parquet' or a folder of Parquet files
  # (trainkit/data/sources/tables.py).
  config.target_column = ''  # The column to predict.
  config.feature_columns = ()  # The feature columns; () = every other column.
  config.id_columns = ()  # Columns carried through to predictions, never features.
  config.weight_column = ''  # Per-row sample weights in the loss; '' = none.
  config.split_column = ''  # Its values name each row's split; '' = one split 'train'.
  config.split_seed = -1  # >= 0: rows shuffled (stratified by class) before slicing; -1: as stored.
  config.max_categories = 20  # One-hot levels of a string column (most frequent; rest: other).
  # Text tables: the separator ('' = a tab for .tsv, else whichever of , ; tab |
  # the header line holds most of) and the encoding (e.g. 'latin-1').
  config.table_separator = ''
  config.table_encoding = 'utf-8'
  # Splits, in TFDS split syntax. The last 5,000 training images are held out
  # for validation (MNIST's classic 55,000 / 5,000): every epoch is evaluated on
  # them and the best checkpoint chosen by them, so the test split is touched
  # only to report, once, at the end. validation_split='' = none (then the
  # epochs are evaluated on the test split, as the tutorials do).
  config.train_split = 'train[:55000]'
  config.validation_split = 'train[55000:]'
  config.test_split = 'test'
  config.allow_split_overlap = False  # Refuse a validation split sharing training examples.
  # The best checkpoint: a validation metric of the task, ranked in its
  # direction (classification: 'accuracy' or 'loss'; regression: 'nll',
  # 'mse', 'rmse', 'mae', 'r2' or 'loss'; mixture_density: 'nll', 'rmse', 'loss').
  config.best_metric = 'accuracy'
  # TFDS data dir; None = TFDS's default (~/tensorflow_datasets).
  config.data_dir = ml_collections.config_dict.placeholder(str)
  # Folder with the dataset's original source files (for mnist: the four IDX
  # .gz files) to prepare from without network; None = let TFDS download.
  config.manual_dir = ml_collections.config_dict.placeholder(str)
  # Input scaling: 'unit' = pixels/255 in [0, 1]; 'standardize' = zero mean,
  # unit variance over the training pixels; 'raw' = pixel values 0-255 as-is;
  # 'per_feature' = each feature its own training mean and std-dev (arrays).
  config.normalization = 'unit'
  # Where training data lives: 'device' = decoded once and kept on the
  # accelerator (shuffled and batched there); 'stream' = read from disk by
  # Grain each epoch, for data too big for that; 'auto' = 'device' when it fits easily.
  config.input_mode = 'auto'
  # 'stream': worker processes that read and decode the examples; 0 = the
  # training process does.
  config.input_workers = 2
  # Per-user caches: decoded splits (memory-mapped at start-up, see
  # trainkit/data/sources/decoded_cache.py) and, when main.py or sweep.py run, JAX's
  # compiled programs. '' = no caches.
  config.cache_dir = '~/.cache/trainkit'

  # Training loop.
  config.batch_size = 128  # Global training batch size.
  config.eval_batch_size = 1000  # Evaluation batch; the last one is padded and masked.
  config.num_epochs = 15  # Passes over the training split.
  # Stop after the epoch that reaches this many steps, whatever the split's
  # size (a stop_reason, as early stopping's); schedules span it; 0 = off.
  config.max_steps = 0
  config.seed = 0  # Seeds parameter init, dropout and the data order.
  # Warm start: parameters and BatchNorm statistics from another run's
  # checkpoint, 'WORKDIR[:STEP|:best|:latest]' (fresh optimizer and step); '' = none.
  config.init_from = ''
  # Regular expression of parameter paths (e.g. 'Dense_2' for a new head) that
  # keep their fresh initialisation in a warm start.
  config.init_exclude = ''
  # Train steps per device call (one lax.scan); 0 = the rest of the epoch.
  # Calls also end at checkpoint steps. Fewer, longer calls save host overhead;
  # the progress bar and the divergence check advance once per call. Streamed
  # input caps a call at 100 steps (its batches are held on the host).
  config.steps_per_call = 50
  # Compute dtype of the layers: 'float32' or 'bfloat16' (parameters,
  # optimizer state and the loss stay float32).
  config.dtype = 'float32'

  # Optimizer.
  config.optimizer = 'adam'  # sgd | momentum | nesterov | adam | adamw | rmsprop.
  config.learning_rate = 1e-3  # Peak learning rate (the schedule scales it).
  config.momentum = 0.9  # For momentum / nesterov (and rmsprop's momentum).
  # Weight decay on kernels (not biases or BatchNorm): decoupled for adamw,
  # added to the gradient (L2) for the others. 0 = off.
  config.weight_decay = 0.0
  config.grad_clip_norm = 0.0  # Clip gradients to this global norm; 0 = off.
  # Average the gradients of this many steps into one update (optax.MultiSteps):
  # an effective batch of k * batch_size in the memory of one. 1 = off.
  config.grad_accumulation_steps = 1
  # Evaluate (and export) an exponential moving average of the parameters,
  # with this decay per update, e.g. 0.999; 0 = off (the parameters themselves).
  config.ema_decay = 0.0

  # On the epochs' validation figures (Keras's EarlyStopping and
  # ReduceLROnPlateau); their state is checkpointed, so a resumed run decides alike.
  config.early_stopping_patience = 0  # Epochs without improvement before stopping; 0 = off.
  config.early_stopping_metric = 'loss'  # A validation metric of the task (see best_metric).
  config.early_stopping_min_delta = 0.0  # A smaller change is no improvement.
  config.plateau_patience = 0  # Epochs without a lower validation loss, then a cut; 0 = off.
  config.plateau_factor = 0.1  # The learning rate is multiplied by this at each plateau.
  config.plateau_min_delta = 1e-4  # A smaller decrease of the loss is no improvement (> 0).

  # Learning-rate schedule: constant | cosine | warmup_cosine | exponential | linear.
  config.schedule = 'warmup_cosine'
  config.warmup_epochs = 0.5  # Linear warmup from 0 (warmup_cosine); < num_epochs.
  config.end_lr_factor = 0.0  # Final lr as a fraction of the peak (cosine, warmup_cosine, linear).
  config.decay_rate = 0.5  # exponential: lr multiplied by this every `decay_epochs`.
  config.decay_epochs = 5.0  # exponential: epochs per `decay_rate` factor.
  config.staircase = False  # exponential: change lr only at epoch boundaries.

  # Non-finite loss or gradient: 'stop' = end the run with an error (the last
  # good checkpoint stays); 'skip' = drop such updates and go on, ending the run
  # after `nan_skip_limit` of them in a row.
  config.nan_policy = 'stop'
  config.nan_skip_limit = 10  # 'skip': consecutive non-finite steps tolerated.

  # Training objective (evaluation always reports standard cross-entropy):
  # 'cross_entropy' (mean over examples); 'class_mean_cross_entropy' (also
  # averaged over classes, as the JAX docs); 'batch_normalized_cross_entropy'
  # (one logsumexp over the whole batch, as "JAX in Action").
  config.loss = 'cross_entropy'

  # Model.
  config.model = ml_collections.ConfigDict()
  # '' = the MLP below; or a backbone: a built-in one by name ('cnn') or a Flax
  # linen module by import path ('package.module:Name'), built with `args`
  # (trainkit/models/backbone.py). The fields below are the MLP's.
  config.model.module = ''
  config.model.args = ml_collections.ConfigDict()  # The backbone's constructor arguments.
  config.model.hidden_sizes = (512, 512)  # Width of each hidden Dense layer.
  # relu | gelu | swish | silu | tanh | sigmoid | elu | leaky_relu.
  config.model.activation = 'relu'
  config.model.dropout_rates = (0.3, 0.4)  # One rate per hidden layer; 0 = no dropout.
  config.model.use_batchnorm = True  # BatchNorm after each hidden layer's dropout.
  config.model.batchnorm_momentum = 0.9  # Running-average decay of the BN statistics.
  # Initialiser of Dense kernels: 'lecun_normal' (Flax default, zero biases)
  # or 'normal' (kernels *and* biases ~ N(0, init_scale^2), as the JAX docs).
  # The MLP's only: family 'tabm' has ReLU layers initialised as its paper's.
  config.model.kernel_init = 'lecun_normal'
  config.model.init_scale = 0.01  # Std-dev for kernel_init='normal'.
  # 'mlp', or 'tabm' (trainkit/models/tabular.py): for tables, MLPs sharing
  # their weights on piecewise-linear embeddings of the numbers.
  config.model.family = 'mlp'
  config.model.members = 32  # tabm: members, trained on the mean of their losses.
  config.model.num_bins = 48  # tabm: quantile bins per number feature; 0 = no embeddings.
  config.model.embedding_size = 16  # tabm: each number feature's vector.

  # Checkpoints and logging.
  config.checkpoint_every_steps = 0  # Also every N steps within epochs; 0 = off.
  # At the end of every N-th epoch (and of the last, and where a run stops
  # early); the best checkpoint is the best of those saved.
  config.checkpoint_every_epochs = 1
  # A save due by the two fields above waits until this many seconds have
  # passed since the last one: 0 = none. The last epoch, an early stop and a
  # signal save whatever the clock says.
  config.checkpoint_min_interval_s = 0.0
  config.keep_checkpoints = 3  # Latest checkpoints kept (plus the best by validation).
  config.log_every_steps = 100  # Train metrics are averaged and logged this often.

  # What a person sees. 'auto' = a live bar per epoch on a terminal, else
  # plain log lines; 'bar' | 'log' force one; 'off' = neither.
  config.progress = 'auto'
  config.progress_every_s = 30.0  # 'log': at most one progress line this often (and one per epoch).
  config.plots = True  # Draw learning curves, confusion matrix and worst errors into WORKDIR/plots.
  # Trackers besides TensorBoard and the workdir's JSON files: '' = none;
  # 'mlflow' = an MLflow run per workdir, nested under its sweep's or search's
  # (trainkit/tracking/mlflow_run.py).
  config.trackers = ''
  # MLflow's store: '' = a SQLite file in the workdir (the sweep's or search's
  # folder for their runs); a path = a SQLite file there, for many runs; or a
  # tracking URI (http://host:5000, sqlite:///..., postgresql://...).
  config.mlflow_uri = ''
  config.mlflow_experiment = 'trainkit'  # The MLflow experiment the runs go into.
  # Trace steps [first, last] (global, 1-based) with jax.profiler into
  # WORKDIR/profile; () = off. The trace spans whole device calls, which end
  # at these steps.
  config.profile_steps = ()

  return config
