"""vae_jax.config: one source of defaults, one validation, what is built from a config."""

from __future__ import annotations

import ml_collections
import pytest

from experiments.configs import burda, default, fmnist_8bit_conv, smoke
from vae_jax import config as config_lib
from vae_jax.run import build
from vae_jax import errors, losses


def test_the_default_experiment_is_the_defaults():
    assert default.get_config().to_dict() == config_lib.defaults().to_dict()


def test_with_defaults_fills_missing_fields_and_keeps_the_given_ones():
    config = ml_collections.ConfigDict({"train": {"batch_size": 64}, "sample": {}})
    out = config_lib.with_defaults(config)
    assert out.train.batch_size == 64
    assert out.train.num_epochs == config_lib.defaults().train.num_epochs
    assert out.sample.temperature == 1.0 and out.sample.pair == (0, 1)
    assert out.model.name == "mlp" and out.seed == 0
    assert "num_epochs" not in config.train, "the caller's config is not changed"


def test_with_defaults_keeps_field_references():
    """burda.py ties num_epochs to burda_schedule_scale with a FieldReference."""
    config = config_lib.with_defaults(burda.get_config("mnist", "elbo", scale=0.01))
    assert config.train.num_epochs == int(0.01 * burda.PAPER_EPOCHS)
    config.optim.burda_schedule_scale = 0.1
    assert config.train.num_epochs == int(0.1 * burda.PAPER_EPOCHS)


@pytest.mark.parametrize("section, field", [("sample", "temprature"), ("train", "bach_size"),
                                            ("eval", "num_importance")])
def test_unknown_fields_are_refused_naming_them(section, field):
    config = smoke.get_config()
    with config.unlocked():
        config[section][field] = 1
    with pytest.raises(errors.ConfigError, match=f"config.{section}.*{field}.*valid"):
        config_lib.with_defaults(config)


def test_unknown_top_level_field_is_refused():
    config = ml_collections.ConfigDict({"trian": {"batch_size": 1}})
    with pytest.raises(errors.ConfigError, match="config.trian is not a config field"):
        config_lib.with_defaults(config)


def test_model_fields_are_the_builders_keyword_arguments():
    config = config_lib.resolve(fmnist_8bit_conv.get_config())
    kwargs = config_lib.model_kwargs(config)
    assert kwargs["likelihood"] == "discretized_logistic_mix5" and kwargs["blocks"] == 1
    assert config_lib.is_8bit(config)
    bad = fmnist_8bit_conv.get_config()
    bad.model.hiden = (3,)
    with pytest.raises(errors.ConfigError, match="config.model.hiden is not an option of "
                                                 "model 'resnet'.*'channels'"):
        config_lib.resolve(bad)


def test_the_likelihood_default_is_the_builders():
    config = smoke.get_config()
    del config.model["likelihood"]
    assert config_lib.likelihood(config_lib.resolve(config)) == "bernoulli"
    config = fmnist_8bit_conv.get_config()
    del config.model["likelihood"]   # resnet's own default: an 8-bit mixture
    assert config_lib.likelihood(config_lib.resolve(config)) == "discretized_logistic_mix5"


def test_loss_options_are_bound_from_the_registry():
    """Each objective gets exactly the config.loss fields it registered; an option it does
    not read, set away from its default, is refused naming the field."""
    config = config_lib.resolve(smoke.get_config())
    model = build.build_model(config, (28, 28, 1))
    assert set(build.build_loss(config, model).keywords) == {"model", "num_samples",
                                                                  "free_bits"}
    config.loss.name = "iwae"
    assert set(build.build_loss(config, model).keywords) == {"model", "num_samples"}
    config.loss.free_bits = 0.5
    with pytest.raises(errors.ConfigError, match="config.loss.free_bits=0.5 has no meaning "
                                                 "for loss 'iwae'"):
        config_lib.validate(config)


def test_a_new_objective_is_a_function_and_a_register_call():
    @losses.register("test_scaled_elbo", options=("num_samples",))
    def scaled(params, x, key, *, model, beta=1.0, num_samples=1):
        loss, metrics = losses.elbo(params, x, key, model=model, beta=beta,
                                    num_samples=num_samples)
        return 2.0 * loss, metrics

    try:
        config = smoke.get_config()
        config.loss.name = "test_scaled_elbo"
        config = config_lib.resolve(config)
        fn = build.build_loss(config, build.build_model(config, (28, 28, 1)))
        assert fn.func is scaled and fn.keywords["num_samples"] == 1
    finally:
        losses.unregister("test_scaled_elbo")


def test_dynamic_binarization_needs_one_eval_batching():
    config = smoke.get_config()
    config.eval.ll_batch_size = 500
    with pytest.raises(errors.ConfigError, match="config.eval.ll_batch_size=500"):
        config_lib.resolve(config)
    config.data.binarization = "static"
    config_lib.resolve(config)


def test_root_keys_are_four_distinct_keys_of_the_seed():
    import jax
    import numpy as np

    keys = build.root_keys(0)
    assert list(keys) == ["init", "train", "order", "eval"]
    data = [tuple(np.asarray(jax.random.key_data(k))) for k in keys.values()]
    assert len(set(data)) == 4
    np.testing.assert_array_equal(jax.random.key_data(build.root_keys(0)["train"]),
                                  jax.random.key_data(jax.random.split(jax.random.key(0),
                                                                       4)[1]))


CONFIGS = [("default", None), ("smoke", None), ("fmnist_8bit_conv", None),
           ("fashion_mnist_vae", None), ("fashion_mnist_iwae", None),
           ("fashion_mnist_hvae", "2layer"), ("fashion_mnist_hvae", "2layer-ladder"),
           ("fashion_mnist_deep_hvae", "binary"), ("fashion_mnist_deep_hvae", "8bit"),
           ("fashion_mnist_deep_hvae", "mnist"), ("fashion_mnist_deep_hvae", "cifar10"),
           ("fashion_mnist_deep_hvae", "cpu"),
           ("fashion_mnist_vdm", "8bit"), ("fashion_mnist_vdm", "binary"),
           ("fashion_mnist_vdm", "latent"), ("fashion_mnist_vdm", "latent8bit"),
           ("fashion_mnist_vdm", "cifar10")]
IMAGE_SHAPES = {"fashion_mnist": (28, 28, 1), "mnist": (28, 28, 1), "cifar10": (32, 32, 3)}


@pytest.mark.parametrize("name, variant", [
    # tracing a deep HVAE takes seconds: those run with the slow tests
    pytest.param(n, v, marks=pytest.mark.slow) if n == "fashion_mnist_deep_hvae" else (n, v)
    for n, v in CONFIGS], ids=[f"{n}:{v}" for n, v in CONFIGS])
def test_every_shipped_config_resolves_and_its_model_fits_its_images(name, variant):
    import importlib

    module = importlib.import_module(f"experiments.configs.{name}")
    config = config_lib.resolve(module.get_config(variant) if variant else module.get_config())
    shape = IMAGE_SHAPES[config.data.name]
    model = build.build_model(config, shape)
    build.check_model_fits(model, shape, config.model.name)  # traced, not compiled


def test_the_cpu_sized_deep_hvae_has_ten_layers_under_a_deterministic_top_block():
    from experiments.configs import fashion_mnist_deep_hvae

    config = config_lib.resolve(fashion_mnist_deep_hvae.get_config("cpu"))
    model = build.build_model(config, (28, 28, 1))
    assert model.num_layers == 10 and model.stochastic[-1] is False   # the 28x28 block
    assert model.widths == (16, 32, 64, 128) and model.bottleneck == 0.5
    assert config.data.binarization != "none" and model.likelihood == "bernoulli"
    assert config.train.eval_every_steps == 5 * (60_000 // config.train.batch_size)
    # the run's own evaluations skip log p(x) at k = 1000 (hours of one core): --mode=eval
    assert config.eval.num_importance_samples == 0 and config.eval.iwae_k == 0


def test_the_cpu_sized_deep_hvaes_cosine_decay_ends_with_the_run():
    """The learning rate reaches 0 at the last step, also when --config.train.num_epochs
    changes the run's length (a FieldReference, resolved after the overrides): a 20-epoch
    run resumed with 30 (``ONLY=cpu_extend``) restarts at the stretched cosine's 5e-4."""
    from experiments.configs import fashion_mnist_deep_hvae
    from vae_jax.train import optim

    for epochs in (20, 3, 30):
        config = fashion_mnist_deep_hvae.get_config("cpu")
        config.train.num_epochs = epochs    # as the command-line override does
        config = config_lib.resolve(config)
        steps = epochs * (60_000 // 32)
        assert config.train.batch_size == 32 and config.optim.decay_steps == steps
        schedule = optim.learning_rate(config.optim)
        assert float(schedule(0)) == pytest.approx(2e-3)
        assert float(schedule(steps // 2)) == pytest.approx(1e-3, rel=1e-3)
        assert float(schedule(steps)) == pytest.approx(0.0, abs=1e-9)
    assert float(schedule(20 * (60_000 // 32))) == pytest.approx(5e-4, rel=1e-3)  # 30's


def test_the_cifar10_vdm_is_8bit_at_the_papers_scale():
    from experiments.configs import fashion_mnist_vdm

    config = config_lib.resolve(fashion_mnist_vdm.get_config("cifar10"))
    assert config.data.name == "cifar10" and config.data.binarization == "none"
    assert config.model.likelihood == "categorical256" and config_lib.likelihood(config) == \
        "categorical256"
    assert (config.model.channels, config.model.blocks) == (128, 8)
    with pytest.raises(ValueError, match="choose one of.*cifar10"):
        fashion_mnist_vdm.get_config("cifar")


def test_the_8bit_latent_vdm_is_the_conv_vae_with_a_vdm_prior():
    """fashion_mnist_vdm.py:latent8bit differs from fmnist_8bit_conv.py only in the prior:
    every field equal but the model's name and backbone, and the same encoder and decoder."""
    from experiments.configs import fashion_mnist_vdm

    latent = config_lib.resolve(fashion_mnist_vdm.get_config("latent8bit"))
    conv = config_lib.resolve(fmnist_8bit_conv.get_config())
    a, b = latent.to_dict(), conv.to_dict()
    assert (a["model"].pop("name"), a["model"].pop("backbone"), b["model"].pop("name")) == (
        "latent_vdm", "resnet", "resnet")
    assert a == b
    ours, theirs = (build.build_model(c, (28, 28, 1)) for c in (latent, conv))
    assert (ours.encoder, ours.decoder) == (theirs.encoder, theirs.decoder)
    assert ours.likelihood == theirs.likelihood and config_lib.is_8bit(latent)
