"""Why the tiny models' embeddings are drawn wider than transformers' default.

Both architectures tie the output layer to the input embeddings, and LoRA trains neither. With the
default std of 0.02 and hidden size 128, a logit can reach at most |h|·|e| ≈ 2.6 (the final norm
fixes |h| at about sqrt(128)), so no fine-tuning can make any token more than a few percent likely:
SFT stalls near a loss of 4 nats. A std of 0.1 lets a logit reach ~13 (probabilities near 1) while
a random model still samples diverse text.
"""

import torch

EMBEDDING_STD = 0.1


@torch.no_grad()
def scale_embeddings(model: torch.nn.Module, std: float) -> None:
    embedding = model.get_input_embeddings().weight
    embedding.normal_(0.0, std)
