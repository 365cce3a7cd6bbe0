"""Training: labelled frames in S3 -> a versioned, self-describing model bundle."""
