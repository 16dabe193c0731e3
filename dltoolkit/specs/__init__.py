"""Each recipe's parameters (its Config) and CLI spec, one module per recipe, TensorFlow-free."""
