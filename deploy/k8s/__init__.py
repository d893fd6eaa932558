"""ragstream on Kubernetes: kustomize manifests (``base/``, ``overlays/``) and what the RayService
imports from the image (``serve_app``)."""
