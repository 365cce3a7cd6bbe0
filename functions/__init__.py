"""The cloud function: classify CCTV frames as they land in object storage.

Its cold path may import only ``shared`` (numpy, Pillow, onnxruntime, boto3): never
TensorFlow, Keras, LightGBM, scipy or scikit-learn.
"""
