"""LoRA, gradient checkpointing and attention options on every head: numbers, not just runs."""

import copy

import pytest
import torch
from transformers import GPT2Config

from gpt2tasks import lora
from gpt2tasks.backbone import ModelSpec, build_model
from gpt2tasks.datamodules.labels import (LANGUAGE_MODELING, MULTIPLE_CHOICE, QUESTION_ANSWERING, SINGLE, TOKEN_CLS,
                                          LabelSpace)
from gpt2tasks.errors import UserError
from gpt2tasks.lora import LoraSpec, apply_lora, check_spec
from gpt2tasks.tasks import KINDS

N_LAYER = 2
LABELS = {"seq_cls": LabelSpace(SINGLE, ["a", "b", "c"]), "token_cls": LabelSpace(TOKEN_CLS, ["O", "B-X", "I-X"]),
          "qa": LabelSpace(QUESTION_ANSWERING, []), "lm": LabelSpace(LANGUAGE_MODELING, []),
          "mc": LabelSpace(MULTIPLE_CHOICE, ["0", "1", "2"])}
HEADS = [kind for kind in KINDS if kind in LABELS]


def tiny_head(kind, tokenizer, **spec_fields):
    torch.manual_seed(0)
    config = GPT2Config(n_layer=N_LAYER, n_head=2, n_embd=32, n_positions=64, vocab_size=len(tokenizer),
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    KINDS[kind].module.configure_head(config, LABELS[kind])
    return build_model(KINDS[kind].head, ModelSpec(**spec_fields), config, tokenizer)


def randomize_adapters(model):
    """LoRA's B starts at zero (adapters are a no-op at init); make them matter for the checks."""
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name or "lora_embedding_B" in name:
            torch.nn.init.normal_(p, std=0.5)


def batch(tokenizer):
    torch.manual_seed(2)
    ids = torch.randint(1, len(tokenizer), (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # one right-padded row
    return ids, mask


@pytest.mark.parametrize("kind", HEADS)
def test_only_adapters_and_the_head_train(kind, tiny_tokenizer):
    model = apply_lora(tiny_head(kind, tiny_tokenizer), LoraSpec(method="lora"), KINDS[kind].module.head_modules)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {f"base_model.model.transformer.h.{layer}.{module}.lora_{ab}.default.weight"
                for layer in range(N_LAYER) for module in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
                for ab in "AB"}
    for head in KINDS[kind].module.head_modules:  # the LM head has none: it is tied to the frozen wte
        expected |= {f"base_model.model.{head}.modules_to_save.default.{name}"
                     for name, _ in getattr(model, head).original_module.named_parameters()}
    assert trainable == expected
    assert lora.targeted_modules(model) and "LoRA on 8 modules" in lora.describe(model)
    assert lora.describe(model).endswith(f"trained in full: {', '.join(KINDS[kind].module.head_modules) or 'nothing'}")


def test_attention_preset_leaves_the_mlp_alone(tiny_tokenizer):
    model = apply_lora(tiny_head("seq_cls", tiny_tokenizer), LoraSpec(method="lora", targets="attention"), ("score",))
    assert sorted({".".join(n.split(".")[-2:]) for n in lora.targeted_modules(model)}) == ["attn.c_attn", "attn.c_proj"]
    # A bare c_proj means both projections of that name: attention output and MLP output.
    model = apply_lora(tiny_head("seq_cls", tiny_tokenizer), LoraSpec(method="lora", targets=["c_proj"]), ("score",))
    assert sorted({".".join(n.split(".")[-2:]) for n in lora.targeted_modules(model)}) == ["attn.c_proj", "mlp.c_proj"]


@pytest.mark.parametrize("kind, targets", [(kind, "attention_mlp") for kind in HEADS]
                         + [(kind, "attention_embeddings") for kind in ("seq_cls", "token_cls", "qa")])
def test_merged_model_gives_the_adapter_models_outputs(kind, targets, tiny_tokenizer):
    model = apply_lora(tiny_head(kind, tiny_tokenizer), LoraSpec(method="lora", dropout=0.0, targets=targets),
                       KINDS[kind].module.head_modules)
    randomize_adapters(model)
    model.eval()
    ids, mask = batch(tiny_tokenizer)
    if kind == "mc":  # (1 example, 3 choices, T)
        ids, mask = ids[None], mask[None]
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask)
        merged = lora.merge(model)
        after = merged(input_ids=ids, attention_mask=mask)
        twice = lora.merge(merged)
    assert type(merged) is KINDS[kind].head and not lora.is_lora(merged)
    assert not any("lora" in k or "modules_to_save" in k for k in merged.state_dict())
    for name in ("logits", "start_logits", "end_logits", "mc_logits"):
        if getattr(before, name, None) is not None:
            torch.testing.assert_close(after[name], before[name], rtol=1e-5, atol=1e-5)
    assert twice is merged  # merging a merged model changes nothing


def test_frozen_base_is_unchanged_by_optimizer_steps(tiny_tokenizer):
    model = apply_lora(tiny_head("seq_cls", tiny_tokenizer), LoraSpec(method="lora"), ("score",))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    head = model.score.modules_to_save["default"].weight.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    ids, mask = batch(tiny_tokenizer)
    for _ in range(3):
        loss = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 2])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)
    assert not torch.equal(model.score.modules_to_save["default"].weight, head)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_added_token_rows_train_but_the_rest_of_wte_does_not(tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    base_vocab = len(tokenizer)
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    model = tiny_head("seq_cls", tiny_tokenizer)  # built at the original vocabulary, then resized
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model = apply_lora(model, LoraSpec(method="lora"), ("score",), new_token_ids=[base_vocab])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and "wte" in n]
    assert trainable == ["base_model.model.transformer.wte.token_adapter.trainable_tokens_delta.default"]
    assert model.get_parameter(trainable[0]).shape == (1, 32)  # one row, not the whole matrix


@pytest.mark.parametrize("use_lora", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(use_lora, tiny_tokenizer):
    def grads(checkpointing):
        model = tiny_head("token_cls", tiny_tokenizer, gradient_checkpointing=checkpointing,
                          config_overrides={"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0})
        if use_lora:
            model = apply_lora(model, LoraSpec(method="lora", dropout=0.0), ("classifier",))
            randomize_adapters(model)
        ids, mask = batch(tiny_tokenizer)
        labels = ids.remainder(3).masked_fill(mask == 0, -100)
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and all(g is not None for g in checkpointed.values())
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6)


def test_embedding_adapters_train_wte_through_a_low_rank_update(tiny_tokenizer):
    model = apply_lora(tiny_head("seq_cls", tiny_tokenizer), LoraSpec(method="lora", targets="attention_embeddings"),
                       ("score",))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"base_model.model.transformer.wte.lora_embedding_A.default",
            "base_model.model.transformer.wte.lora_embedding_B.default"} <= trainable
    assert not any(n.endswith("wte.weight") or "mlp" in n for n in trainable)
    assert "LoRA on 5 modules" in lora.describe(model)  # 2 layers x (c_attn, c_proj) + wte


@pytest.mark.parametrize("kind", ["lm", "mc"])
def test_embedding_adapters_are_refused_where_wte_is_the_output_layer(kind, tiny_tokenizer):
    with pytest.raises(UserError, match="tied to this head's output layer"):
        apply_lora(tiny_head(kind, tiny_tokenizer), LoraSpec(method="lora", targets=["c_attn", "wte"]),
                   KINDS[kind].module.head_modules)
    if kind == "lm":  # and where added token rows of wte train in full
        with pytest.raises(UserError, match="model.pad_token=eos"):
            apply_lora(tiny_head("seq_cls", tiny_tokenizer), LoraSpec(method="lora", targets=["wte"]), ("score",),
                       new_token_ids=[3])


def test_bad_lora_settings_name_the_key_and_the_fix():
    problems = check_spec(LoraSpec(method="lora", r=0, targets=["c_attn", "q_proj"], dropout=1.5))
    text = " ".join(problems)
    assert len(problems) == 3
    assert "peft.r=0" in text and "peft.dropout=1.5" in text
    assert "['q_proj'] is not GPT-2 projection" in text and "attn.c_proj" in text  # lists the valid names
    assert check_spec(LoraSpec(method="lora")) == [] and check_spec(LoraSpec(method="none", r=-1)) == []
    assert "peft.method" in check_spec(LoraSpec(method="qlora"))[0]


def test_lora_errors_reach_the_user_from_the_config(cfg_factory):
    from gpt2tasks.config import validate_config

    with pytest.raises(UserError, match=r"peft\.r=-2 must be a positive integer"):
        validate_config(cfg_factory("peft=lora", "peft.r=-2"))


def test_flash_attention_without_the_package_is_refused(tiny_tokenizer):
    import importlib.util

    from gpt2tasks.backbone import load_model_config

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(UserError, match="flash-attn package"):
        load_model_config(ModelSpec(attn_implementation="flash_attention_2", arch={"n_layer": 1}), tiny_tokenizer)


def test_compile_is_in_place_and_keeps_parameter_names(cfg_factory, tiny_tokenizer):
    """model.compile=true compiles the backbone module in place (the run itself: a slow test)."""
    from gpt2tasks import runspec
    from gpt2tasks.build import adapt_models

    model = tiny_head("seq_cls", tiny_tokenizer)
    names = list(model.state_dict())
    (adapted,) = adapt_models(runspec.parse(cfg_factory("model.compile=true")), {"sample_sentiment": model}, []).values()
    assert adapted is model and model.transformer._compiled_call_impl is not None
    assert list(model.state_dict()) == names
