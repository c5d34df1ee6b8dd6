"""mvgen: one deployments.yaml -> Modal vLLM apps and a LiteLLM config."""
