"""Applications of data summaries (the survey's §4): continual learning, neural architecture
search, federated learning, differential privacy. Reserved: each application will be one module
here that consumes only a saved ``SyntheticSet`` (or a method name and budget to make one) and
never reaches into a method's internals. Nothing here prints: the command lines
(``datadistill app NAME``) are ``cli/apps/NAME.py``."""
