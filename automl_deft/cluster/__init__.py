"""Talking to a Kubeflow cluster: the kfp client (submit, schedule) and the manifests to apply."""
