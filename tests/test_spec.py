import random

import pytest

from pipeline.space import ArchSpec, SearchSpace, SpecError, available_spaces


def test_presets_exist():
    assert {"autoformer_tiny", "autoformer_small", "autoformer_base", "pit_tiny", "demo"} <= set(available_spaces())


@pytest.mark.parametrize("name", ["autoformer_tiny", "pit_tiny", "demo"])
def test_spec_roundtrip_yaml_and_json(tmp_path, name):
    space = SearchSpace.load(name)
    rng = random.Random(1)
    for i in range(20):
        spec = space.sample(rng)
        for suffix in (".yaml", ".json"):
            path = spec.save(tmp_path / f"arch{i}{suffix}")
            back = ArchSpec.load(path)
            assert back == spec
            assert back.to_dict() == spec.to_dict()
        assert ArchSpec.from_dict(spec.to_dict()) == spec


def test_autoformer_presets_match_paper():
    t = SearchSpace.load("autoformer_tiny")
    assert t.embed_dim == (192, 216, 240) and t.stage_depths == ((12, 13, 14),)
    assert t.mlp_ratio.values == (3.5, 4.0) and t.num_heads.values == (3, 4)
    assert t.fixed["head_dim"] == 64 and t.fixed["rel_pos"] is True
    # AutoFormer trains its supernets with --gp (mean of the patch tokens) for every size.
    for space in ("autoformer_tiny", "autoformer_small", "autoformer_base"):
        assert SearchSpace.load(space).fixed["global_pool"] == "avg"
    assert SearchSpace.load("pit_tiny").fixed.get("global_pool", "token") == "token"
    s = SearchSpace.load("autoformer_small")
    assert s.embed_dim == (320, 384, 448) and s.num_heads.values == (5, 6, 7)
    assert s.mlp_ratio.values == (3.0, 3.5, 4.0) and s.stage_depths == ((12, 13, 14),)
    b = SearchSpace.load("autoformer_base")
    assert b.embed_dim == (528, 576, 624) and b.num_heads.values == (9, 10)
    assert b.stage_depths == ((14, 15, 16),)
    p = SearchSpace.load("pit_tiny")
    assert p.stage_depths == ((1, 2, 3), (4, 6, 8), (2, 4, 6))
    assert p.mlp_ratio.per == "global" and p.num_heads.per == "stage"


def test_validation_names_field_and_allowed_values():
    space = SearchSpace.load("autoformer_tiny")
    good = space.sample(random.Random(0))
    bad = ArchSpec.from_dict({**good.to_dict(), "embed_dim": 200})
    with pytest.raises(SpecError, match=r"embed_dim=200.*\[192, 216, 240\]"):
        space.validate(bad)
    heads = list(good.num_heads)
    heads[2] = 5
    with pytest.raises(SpecError, match=r"num_heads\[2\]=5.*\[3, 4\]"):
        space.validate(ArchSpec.from_dict({**good.to_dict(), "num_heads": heads}))
    with pytest.raises(SpecError, match=r"head_dim"):
        space.validate(ArchSpec.from_dict({**good.to_dict(), "head_dim": None, "num_heads": [3] * good.depth}))
    pit = SearchSpace.load("pit_tiny")
    spec = pit.sample(random.Random(0))
    mlps = list(spec.mlp_ratio)
    mlps[-1] = 2.0 if mlps[-1] != 2.0 else 4.0
    with pytest.raises(SpecError, match="one value per global"):
        pit.validate(ArchSpec.from_dict({**spec.to_dict(), "mlp_ratio": mlps}))


def test_malformed_specs():
    with pytest.raises(SpecError, match="unknown spec field"):
        ArchSpec.from_dict({"family": "vit", "embed_dim": 64, "num_heads": [2], "mlp_ratio": [2], "depth_x": 1})
    with pytest.raises(SpecError, match="mlp_ratio"):
        ArchSpec(family="vit", embed_dim=64, num_heads=(2, 2), mlp_ratio=(2.0,))
    with pytest.raises(SpecError, match="not divisible"):
        ArchSpec(family="vit", embed_dim=64, num_heads=(3,), mlp_ratio=(2.0,))
    with pytest.raises(SpecError, match="missing required"):
        ArchSpec.from_dict({"family": "vit", "embed_dim": 64})


def test_load_errors(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        ArchSpec.load(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("family: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        ArchSpec.load(tmp_path / "bad.yaml")
    with pytest.raises(SpecError, match="unknown search space 'nope'"):
        SearchSpace.load("nope")


@pytest.mark.parametrize("name", ["autoformer_tiny", "autoformer_base", "pit_tiny", "demo"])
def test_sampling_mutation_crossover_stay_in_space(name):
    space = SearchSpace.load(name)
    rng = random.Random(0)
    pop = [space.sample(rng) for _ in range(30)]
    for spec in pop:
        space.validate(spec)
    for _ in range(200):
        a, b = rng.sample(pop, 2)
        space.validate(space.mutate(a, rng))
        space.validate(space.crossover(a, b, rng))


def test_seeded_operators_are_deterministic():
    space = SearchSpace.load("autoformer_tiny")

    def run(seed):
        rng = random.Random(seed)
        a, b = space.sample(rng), space.sample(rng)
        return [a, b, space.mutate(a, rng), space.crossover(a, b, rng)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_mutation_probabilities_are_respected():
    space = SearchSpace.load("autoformer_tiny")
    rng = random.Random(0)
    base = space.sample(rng)
    same = [space.mutate(base, rng, layer_prob=0.0, global_prob=0.0) for _ in range(20)]
    assert all(s == base for s in same)
    changed = sum(space.mutate(base, rng, layer_prob=1.0, global_prob=0.0).num_heads != base.num_heads
                  for _ in range(20))
    assert changed >= 18


def test_pit_spec_with_heads_changing_inside_a_stage_is_an_error():
    ok = ArchSpec(family="pit", embed_dim=16, num_heads=(2, 2, 4), mlp_ratio=(2.0,) * 3, stage_depths=(2, 1))
    assert ok.stage_depths == (2, 1)
    with pytest.raises(SpecError, match=r"PiT stage 0 has heads \[2, 4\].*same num_heads"):
        ArchSpec(family="pit", embed_dim=16, num_heads=(2, 4, 4), mlp_ratio=(2.0,) * 3, stage_depths=(2, 1))
    d = {"name": "bad", "family": "pit", "choices": {"embed_dim": [16], "stage_depths": [[1, 2], [1, 2]],
                                                     "mlp_ratio": [2], "num_heads": {"values": [2, 4], "per": "layer"}},
         "fixed": {"img_size": 32, "patch_size": 8, "patch_stride": 4, "num_classes": 10}}
    with pytest.raises(SpecError, match="set choices.num_heads.per to 'stage'"):
        SearchSpace.from_dict(d)
    d["choices"]["num_heads"]["per"] = "stage"
    SearchSpace.from_dict(d)


def test_spec_sources_inline_file_and_export_without_weights(tmp_path):
    """What a training run's spec is read from (pipeline.space.sources): an inline mapping, a file,
    or the spec inside a classification export, read without reading its tensors."""
    import torch

    from pipeline.space.sources import as_spec, exported_spec, read_spec

    spec = ArchSpec(family="vit", embed_dim=32, num_heads=(2, 2), mlp_ratio=(2.0, 2.0), img_size=32, patch_size=8)
    inline = read_spec(spec.to_dict())
    assert inline.spec == spec and inline.file is None and "inline" in inline.source
    path = spec.save(tmp_path / "arch.yaml")
    from_file = read_spec(str(path))
    assert from_file.spec == spec and from_file.file == path and from_file.source == str(path)
    assert as_spec(spec) is spec
    with pytest.raises(SpecError, match="a spec must be a mapping of spec fields, got list"):
        as_spec([1, 2])

    big = torch.zeros(1_000_000)   # 4 MB that the spec reader maps, not reads
    torch.save({"spec": spec.to_dict(), "state_dict": {"w": big}}, tmp_path / "model.pt")
    assert exported_spec(tmp_path / "model.pt") == spec
    with pytest.raises(SpecError, match="does not exist; `python -m pipeline train --task cls` writes"):
        exported_spec(tmp_path / "missing.pt")
    torch.save({"weights": big}, tmp_path / "other.pt")
    with pytest.raises(SpecError, match=r"not a classification export: .*found \['weights'\]"):
        exported_spec(tmp_path / "other.pt")
