"""datadistill: dataset distillation for images, graphs, text and recommender data.

Data flows one way: ``load_dataset -> init_from -> Distiller.distill -> SyntheticSet.save ->
evaluate -> report``.
"""
__version__ = "0.1.0"
