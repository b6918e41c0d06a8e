import pytest

from teacher import registry
from teacher.formats import PROMPT_FORMATS


def test_unknown_teacher_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown teacher 'gpt-9'.*smollm2-135m"):
        registry.get_teacher("gpt-9")


def test_production_teachers_are_registered_with_hub_ids():
    ids = {t.hub_id for t in registry.TEACHERS.values() if not t.embedded}
    assert ids == {"mistralai/Mistral-7B-Instruct-v0.2", "meta-llama/Llama-2-7b-chat-hf", "tiiuae/falcon-7b-instruct"}
    for t in registry.TEACHERS.values():
        assert t.prompt_format in PROMPT_FORMATS
        if not t.embedded:
            assert t.gpu_memory_gib > 0 and t.model_path() == t.hub_id


def test_missing_embedded_model_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="run `make models`"):
        registry.get_teacher("smollm2-135m").model_path()


def test_unreachable_hub_teacher_names_model_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"mistralai/Mistral-7B-Instruct-v0.2@main .*HF_HOME"):
        registry.check_reachable(registry.get_teacher("mistral-7b-instruct"))


def test_a_config_declares_a_teacher_by_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    t = registry.declare("my-llama", {"path": str(tmp_path), "family": "llama2", "prompt_format": "llama2"})
    assert (t.source, t.model_path(), t.prompt_format, t.load_kwargs()) == ("local", str(tmp_path), "llama2", {})
    registry.check_reachable(t)


def test_a_builtin_teacher_is_a_default_the_config_can_pin():
    sha = "a" * 40
    t = registry.declare("falcon-7b-instruct", {"revision": sha})
    assert t.hub_id == "tiiuae/falcon-7b-instruct" and t.prompt_format == "falcon"
    assert t.load_kwargs() == {"revision": sha}
    assert registry.declare("falcon-7b-instruct", {"revision": sha}, pinned=True).revision == sha


@pytest.mark.parametrize("table, pinned, message", [
    ({"path": "{d}/empty"}, False, "is not a model folder \\(no config.json\\)"),
    ({"path": "{d}/pickled"}, False, "only pickled weights \\(pytorch_model.bin\\), which are never loaded"),
    ({"path": "{d}/noweights"}, False, "holds no weights; it needs \\*.safetensors"),
    ({"hub_id": "org/m", "prompt_format": "alpaca"}, False, "^prompt_format: 'alpaca' is not a prompt format"),
    ({"hub_id": "org/m", "revision": "main"}, True, "^revision: 'main' must be a 40-character commit hash"),
    ({"hub_id": "org/m", "path": "{d}"}, False, "^path: set together with hub_id"),
    ({"family": "x"}, False, "unknown teacher 't'.*declare a new one with teacher.t.path"),
    ({"hub_id": "org/m", "dtype": "bf16"}, False, "^dtype: unknown setting"),
])
def test_bad_teacher_declarations_are_named(tmp_path, table, pinned, message):
    for name, files in {"empty": [], "pickled": ["config.json", "pytorch_model.bin"], "noweights": ["config.json"]}.items():
        (tmp_path / name).mkdir()
        for f in files:
            (tmp_path / name / f).write_text("{}")
    table = {k: v.format(d=tmp_path) if isinstance(v, str) else v for k, v in table.items()}
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        registry.declare("t", table, pinned)


def test_a_gated_teacher_without_access_stops_before_any_work_naming_the_fix(tmp_path, monkeypatch):
    """Llama-2 without an accepted licence or a token: its card answers, its files do not.
    A fake hub at the boundary, with the hub client's own error type."""
    import httpx
    import huggingface_hub
    import huggingface_hub.constants as c
    from huggingface_hub.errors import GatedRepoError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, *a, **k: object())

    def refuse(repo_id, **kw):
        request = httpx.Request("GET", f"https://hub.example/api/models/{repo_id}/auth-check")
        raise GatedRepoError(f"Access to model {repo_id} is restricted.", response=httpx.Response(403, request=request))

    monkeypatch.setattr(huggingface_hub, "auth_check", refuse)
    with pytest.raises(FileNotFoundError, match=r"teacher 'llama2-7b-chat': meta-llama/Llama-2-7b-chat-hf is gated: "
                                                r"accept its licence .* set HF_TOKEN"):
        registry.check_reachable(registry.get_teacher("llama2-7b-chat"))
