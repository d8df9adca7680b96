"""The training recipes transformers need: AdamW with decay split by role, automatic augmentation policies and
mixup / cutmix, each deterministic under the seed; the recipe configs in configs/ resolve; adding these
options left every earlier run id unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from npasbench import ConfigError, create_model
from npasbench.config import build_config, load_config
from npasbench.data.load import load_data, make_loader
from npasbench.data.mixing import ExtraAugment
from npasbench.experiment import resolve, run_id
from npasbench.trainer.optim import build_optimizer
from npasbench.trainer.step import member_loss

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_adamw_exempts_norms_biases_and_embeddings_by_role():
    built = create_model("unshared", "vit-2-32-h1-p4", "cifar100")
    cfg = build_config({}, {"optim.name": "adamw", "optim.lr": 1e-3, "optim.weight_decay": 0.05,
                            "optim.betas": [0.9, 0.95], "optim.no_decay_roles": ["norm_bias", "embedding", "head_bias"]})
    opt = build_optimizer(built.model, cfg.optim, built.method.no_weight_decay_roles())
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.95)
    decayed = {n for g in opt.param_groups if g["weight_decay"] > 0 for n in g["names"]}
    exempt = {n for g in opt.param_groups if g["weight_decay"] == 0 for n in g["names"]}
    assert any(n.endswith("pos_embed") for n in exempt) and any(n.endswith("cls_token") for n in exempt)
    assert any(n.endswith("norm1.weight") for n in exempt) and any(n.endswith("qkv.bias") for n in exempt)
    assert any(n.endswith("head.bias") for n in exempt) and any(n.endswith("head.provider.weight") for n in decayed)
    assert all(n.endswith(".weight") and "norm" not in n for n in decayed)
    assert any("qkv.provider.weight" in n for n in decayed)
    # decoupled: a parameter with zero gradient shrinks by lr * wd, whatever Adam's state
    p = next(p for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"])
    before = p.detach().clone()
    for q in built.model.parameters():
        q.grad = torch.zeros_like(q)
    opt.step()
    torch.testing.assert_close(p.detach(), before * (1 - 1e-3 * 0.05))  # approx: one float multiply


def test_bad_optimiser_and_augmentation_fields_are_named():
    for over, field in [({"optim.name": "adam"}, "optim.name"), ({"optim.betas": [0.9]}, "optim.betas"),
                        ({"optim.eps": 0}, "optim.eps"), ({"data.auto_augment": "autoaug"}, "data.auto_augment"),
                        ({"data.mixup_alpha": -1}, "data.mixup_alpha"), ({"data.mix_prob": 2}, "data.mix_prob")]:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            build_config({}, over)


def test_new_options_at_their_defaults_keep_every_earlier_run_id():
    base = {"method.name": "ssn", "model.arch": "wrn-16-1", "model.budget": "50%", "data.name": "cifar100"}
    plain = run_id(build_config({}, base))
    spelled = run_id(build_config({}, {**base, "optim.name": "sgd", "optim.betas": [0.9, 0.999], "optim.eps": 1e-8,
                                       "data.auto_augment": "none", "data.mixup_alpha": 0, "data.cutmix_alpha": 0.0,
                                       "data.mix_prob": 1.0}))
    assert plain == spelled
    assert run_id(build_config({}, {**base, "optim.name": "adamw"})) != plain
    assert run_id(build_config({}, {**base, "data.mixup_alpha": 0.8})) != plain


def _loader(**data):
    cfg = build_config({}, {"data.synthetic_train": 64, "data.synthetic_test": 16, "data.synthetic_classes": 10,
                            **{f"data.{k}": v for k, v in data.items()}})
    bundle = load_data(cfg.data)
    return make_loader(bundle, "train", 16, cfg.data, seed=3)


@pytest.mark.parametrize("policy", ["trivial", "randaugment"])
def test_policies_are_seeded_per_batch_and_change_images(policy):
    plain = next(iter(_loader().epoch(0)))[0]
    a = [x for x, _ in _loader(auto_augment=policy).epoch(1)]
    b = [x for x, _ in _loader(auto_augment=policy).epoch(1)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))  # exact: the same draws on the same tensors
    first = next(iter(_loader(auto_augment=policy).epoch(0)))[0]
    assert first.shape == plain.shape and not torch.equal(first, plain)
    torch.manual_seed(0)
    again = next(iter(_loader(auto_augment=policy).epoch(0)))[0]
    assert torch.equal(first, again)  # exact: the global generator is forked, not read


def test_mixup_and_cutmix_give_soft_targets_that_train():
    for kind in ({"mixup_alpha": 0.8}, {"cutmix_alpha": 1.0}, {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}):
        batches = list(_loader(**kind).epoch(0))
        again = list(_loader(**kind).epoch(0))
        for (x, y), (x2, y2) in zip(batches, again):
            assert y.shape == (16, 10) and torch.allclose(y.sum(1), torch.ones(16))  # approx: float sums
            assert torch.equal(x, x2) and torch.equal(y, y2)  # exact: same seed, same ops
        assert any(float(y.max(1).values.min()) < 1.0 for _, y in batches)  # some targets really mixed
    x, y = batches[0]
    built = create_model("unshared", "wrn-10-1", "synthetic")
    loss = member_loss(built.model(x), y, 0.1)
    assert torch.isfinite(loss)
    off = ExtraAugment(mixup_alpha=0.8, mix_prob=0.0, num_classes=10)
    _, hard = off.mix(torch.zeros(2, 3, 4, 4), torch.tensor([1, 2]), torch.Generator().manual_seed(0))
    assert hard.tolist()[0][1] == 1.0 and hard.sum().item() == 2.0


def test_evaluation_batches_are_never_augmented_or_mixed():
    cfg = build_config({}, {"data.synthetic_train": 32, "data.synthetic_test": 16, "data.mixup_alpha": 0.8,
                            "data.auto_augment": "trivial"})
    bundle = load_data(cfg.data)
    x, y = next(iter(make_loader(bundle, "test", 16, cfg.data)))
    assert y.dtype == torch.int64 and y.dim() == 1


@pytest.mark.parametrize("name", ["vit_cifar100.toml", "deit_imagenet.toml", "densenet_bc_cifar.toml",
                                  "mobilenetv2_cifar.toml", "mobilenetv2_imagenet.toml"])
def test_recipe_configs_resolve_and_cite_their_sources(name):
    path = CONFIGS / name
    cfg = resolve(load_config(path)).config
    text = path.read_text()
    keys = [line.split("=")[0].strip() for line in text.splitlines()
            if "=" in line and not line.lstrip().startswith("#") and not line.lstrip().startswith("[")]
    # every hyper-parameter line carries its source in a comment
    uncited = [line for line in text.splitlines() if "=" in line and not line.lstrip().startswith(("#", "["))
               and "#" not in line]
    assert keys and not uncited, uncited
    assert cfg.model.arch


def test_exponential_schedule_is_torchvisions_per_epoch_decay():
    from npasbench.trainer.schedule import LRSchedule

    cfg = resolve(load_config(CONFIGS / "mobilenetv2_imagenet.toml")).config
    sched = LRSchedule.from_config(cfg.optim, 300, 10)
    assert sched.lr(0, 0) == pytest.approx(0.045) and sched.lr(0, 9) == pytest.approx(0.045)  # approx: float powers
    assert sched.lr(2, 5) == pytest.approx(0.045 * 0.98 ** 2) and sched.lr(299, 0) == pytest.approx(0.045 * 0.98 ** 299)
    with pytest.raises(ConfigError, match=r"optim\.gammas: the exponential schedule takes one"):
        build_config({}, {"optim.schedule": "exponential", "optim.gammas": [0.9, 0.9], "optim.milestones": [1, 2]})


def test_sgd_recipes_still_decay_the_head_bias():
    built = create_model("unshared", "wrn-10-1", "cifar100")
    opt = build_optimizer(built.model, build_config({}, {}).optim, built.method.no_weight_decay_roles())
    decayed = {n for g in opt.param_groups if g["weight_decay"] > 0 for n in g["names"]}
    assert "members.0.classifier.bias" in decayed and "members.0.stage_1.0.bn1.bias" in decayed
