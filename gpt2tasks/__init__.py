"""gpt2tasks: fine-tune GPT-2 backbones on tasks with Lightning, Hydra and Hugging Face heads."""

__version__ = "0.1.0"
