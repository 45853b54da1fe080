"""The pipeline configs installed with normlab as ``normlab.configs``; digits.yaml is the default (normlab.config)."""
