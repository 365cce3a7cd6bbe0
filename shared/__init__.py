"""Code shared by training and the cloud function.

Everything here must stay importable without TensorFlow, LightGBM, scikit-learn or
scipy: the function imports it on its cold path.
"""
