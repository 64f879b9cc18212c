"""What the API service, the model runner and the batch share: the model registry, the scoring
core, the market snapshot and the date policy. Imports market, features and the model store;
never serving, batch or vcp."""

# Rows per runner micro-batch (VCP_MAX_BATCH_SIZE), and per call of the batch's --url mode.
# Here, not in a submodule, so reading the settings does not import the model stack.
DEFAULT_BATCH_ROWS = 512
