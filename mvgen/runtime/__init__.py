"""Code that runs inside the Modal containers: the gateway and vLLM process control."""
