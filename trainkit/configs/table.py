"""Your own table: an MLP on the columns of a CSV or Parquet file.

    python main.py --config=configs/table.py --workdir=W \
        --config.dataset=data.csv --config.target_column=label [--config.task=binary]

Every column but the target (and `id_columns`, `weight_column`,
`split_column`) is a feature: numbers filled with their training mean where
missing (plus a missing indicator), strings one-hot over their most frequent
levels, all standardised with the training split's statistics. The rows are
shuffled by `split_seed`, stratified by class, then split 70 / 15 / 15; the
best checkpoint is the one with the lowest validation loss, whatever the task.
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
  config.model.hidden_sizes = (128, 64)
  config.model.dropout_rates = (0.1, 0.1)
  config.model.use_batchnorm = False  # Small tables: batches too small for good statistics.
  config.batch_size = 32
  config.eval_batch_size = 512
  config.num_epochs = 100
  config.schedule = 'cosine'
  config.steps_per_call = 0  # A whole epoch per device call: small tables, short epochs.
  # A save costs more than 20 epochs of a small table; the best epoch is held between saves.
  config.checkpoint_every_epochs = 50
  config.plots = False
  return config
