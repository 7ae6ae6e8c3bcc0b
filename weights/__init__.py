# Trained weights shipped with stnviz. Installed as the package ``stnviz.weights`` so that
# ``stnviz.load_pretrained(NAME)`` finds them from a wheel as well as from this repository.
