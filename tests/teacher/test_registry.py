import pytest

from teacher import registry


def test_unknown_teacher_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown teacher 'gpt-9'.*smollm2-135m"):
        registry.get_teacher("gpt-9")


def test_production_teachers_are_registered_with_hub_ids():
    ids = {t.hub_id for t in registry.TEACHERS.values() if not t.embedded}
    assert ids == {"mistralai/Mistral-7B-Instruct-v0.2", "meta-llama/Llama-2-7b-chat-hf", "tiiuae/falcon-7b-instruct"}
    for t in registry.TEACHERS.values():
        assert t.prompt_format in ("chat", "completion")
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
