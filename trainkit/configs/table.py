"""Your own table: TabM, k MLPs sharing their weights, on the columns of a CSV or Parquet file.

    python main.py --config=configs/table.py --workdir=W \
        --config.dataset=data.csv --config.target_column=label [--config.task=binary]

Every column but the target (and `id_columns`, `weight_column`,
`split_column`) is a feature: numbers filled with their training mean where
missing (plus a missing indicator), strings one-hot over their most frequent
levels, all standardised with the training split's statistics; each number
also gets a piecewise-linear embedding over quantile bins of its training
values (trainkit/models/tabular.py). The rows are shuffled by `split_seed`,
stratified by class, then split 70 / 15 / 15; training stops when the
validation loss has not improved for 16 epochs, or at 12,000 steps, and the
best checkpoint is the one with the lowest validation loss, whatever the task.
`--config.model.family=mlp` trains the plain MLP on the same features.
"""

from trainkit.configs import default


def get_config():
  """A table's defaults: set dataset and target_column (and task, if not classes)."""
  config = default.get_config()
  config.dataset = 'table.csv'  # A .csv or .parquet file, or a folder of Parquet files.
  config.target_column = 'target'  # The column to predict.
  config.task = 'classification'  # Or 'binary', 'regression', 'mixture_density'.
  config.regression_loss = 'mse'  # regression: a mean, as scikit-learn's MLPRegressor.
  config.train_split = 'train[:70%]'
  config.validation_split = 'train[70%:85%]'
  config.test_split = 'train[85%:]'
  config.split_seed = 0  # Shuffled (stratified by class) before the slices.
  config.normalization = 'per_feature'  # Each feature standardised with training statistics.
  config.best_metric = 'loss'  # Every task reports one, ranked lower-is-better.
  config.early_stopping_metric = 'loss'
  # TabM (trainkit/models/tabular.py); 'mlp' is the plain MLP on the same features.
  config.model.family = 'tabm'
  config.model.members = 8  # Cost grows with members: 8 keeps a 50,000-row table in 90 s here.
  # As many bins as boosting's histograms: a code of up to 255 values gets one each.
  config.model.num_bins = 255
  config.model.embedding_size = 16
  config.model.hidden_sizes = (128, 128)
  config.model.dropout_rates = (0.1, 0.1)
  config.model.use_batchnorm = False  # Small tables: batches too small for good statistics.
  config.optimizer = 'adamw'
  config.learning_rate = 2e-3
  config.weight_decay = 3e-4
  config.schedule = 'cosine'  # Over max_steps, or num_epochs where they end sooner.
  config.batch_size = 64
  config.eval_batch_size = 512
  # A budget of steps, not epochs: a small table gets as many steps as a large
  # one (and early stopping ends most runs sooner); 12,000 keep a 50,000-row
  # table within a minute and a half on two CPU cores.
  config.num_epochs = 1000
  config.max_steps = 12_000
  config.early_stopping_patience = 16  # Epochs without a better validation loss.
  config.steps_per_call = 0  # A whole epoch per device call: small tables, short epochs.
  # A save costs more than 20 epochs of a small table (60-90 ms of CPU): every
  # 50th epoch, once 10 s have passed since the last save, so a kill loses 50
  # epochs or 10 s of training, whichever is more. The best epoch is held
  # between saves.
  config.checkpoint_every_epochs = 50
  config.checkpoint_min_interval_s = 10.0
  config.plots = False
  return config
