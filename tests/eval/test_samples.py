"""Students sample as the teachers do: the run's temperature and top-p reach generate()."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from eval.samples import sample_fables


class Tok:
    pad_token_id, eos_token_id = 0, None

    def batch_decode(self, ids, skip_special_tokens=True):
        return [" ".join(map(str, row.tolist())) for row in ids]


def tiny_model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def test_a_tiny_nucleus_is_the_greedy_path_and_top_p_one_is_not():
    model, prompts = tiny_model(), [[1, 2, 3], [4, 5]]
    greedy = [" ".join(map(str, model.generate(input_ids=torch.tensor([p]), max_new_tokens=12, do_sample=False)[0, len(p):].tolist()))
              for p in prompts]
    assert sample_fables(model, Tok(), prompts, 12, temperature=1.0, top_p=1e-6, seed=3) == greedy
    full = [sample_fables(model, Tok(), prompts, 12, temperature=1.0, top_p=1.0, seed=s) for s in range(3)]
    assert any(f != greedy for f in full)  # a random model's full distribution is not its argmax path
