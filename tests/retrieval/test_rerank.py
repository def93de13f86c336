"""Teacher re-ranking at query time (distill/retrieval/rerank.py) and the /search request pieces that need no Serve:
upload checks (serve/uploads.py) and the query union's error locations (serve/search.py)."""

import time

import pytest
from helpers.serve import FakeVLM, png_b64
from PIL import Image

from distill.config.pipeline import RerankConfig, ServeConfig
from distill.config.teacher import TeacherConfig
from distill.retrieval.rerank import Reranker, effective_teacher_config
from distill.teacher import Candidate, Teacher
from distill.teacher.base import Generation
from distill.teacher.tokens import TokenCounter, qwen_visual_tokens, rerank_prompt_tokens


def _cands(n: int) -> list[Candidate]:
    return [Candidate(f"item-{i:02d}", title=f"thing {i}", image=Image.new("RGB", (64, 40), (10 * i, 0, 0)))
            for i in range(n)]


class ScriptedTeacher(Teacher):
    """Answers every rank request with `text(n)` after `delay_s`; counts calls."""

    backend = "cpu"

    def __init__(self, text=lambda n: '{"ranking": %s}' % list(range(n, 0, -1)), delay_s=0.0, raises=False):
        super().__init__(TeacherConfig())
        self.text, self.delay_s, self.raises, self.calls = text, delay_s, raises, 0

    def _generate(self, jobs):
        self.calls += 1
        time.sleep(self.delay_s)
        if self.raises:
            raise RuntimeError("engine exploded")
        return [Generation(self.text(req.n)) for req, _ in jobs]


def _reranker(teacher, **cfg) -> Reranker:
    return Reranker(TeacherConfig(), RerankConfig(enabled=True, **cfg), teacher=teacher)


def test_qwen_visual_token_arithmetic():
    assert qwen_visual_tokens(224, 224, 224 * 224) == 64  # 8 x 8 merged 28 px cells
    assert qwen_visual_tokens(448, 448, 224 * 224) == 64  # scaled down to the cap
    assert qwen_visual_tokens(224, 224, 256 * 28 * 28) == 64  # under the production cap: unchanged
    assert qwen_visual_tokens(448, 448, 256 * 28 * 28) == 256
    assert qwen_visual_tokens(1000, 500, 224 * 224) == 55  # aspect kept: 308 x 140 -> 11 x 5
    assert qwen_visual_tokens(10, 10, 224 * 224) == 4  # raised to min_pixels (56 x 56)


@pytest.mark.parametrize("k", [10, 20])
def test_prompt_token_estimate_for_k_images(k):
    est = rerank_prompt_tokens("a gift for a mother who loves gardening", k)
    assert est["visual"] == 64 * k and est["per_image"] == 64
    assert 100 < est["text"] < 400 and est["total"] == est["text"] + est["visual"]
    assert est["method"] in {"MiniLM WordPiece estimate", "chars/4 estimate"}
    assert TokenCounter("/no/such/tokenizer.json").method == "chars/4 estimate"


def test_rerank_orders_the_top_k_and_caches_the_answer():
    teacher = ScriptedTeacher()
    rr = _reranker(teacher, k=10)
    cands = _cands(12)
    first = rr.rerank("a red thing", cands, 5.0)
    assert first.reranked and first.reason is None and not first.cached
    assert sorted(first.order[:10]) == [c.item_id for c in cands[:10]]
    assert first.order[10:] == ["item-10", "item-11"]  # beyond k: the student's order
    assert first.prompt_tokens > 640
    again = rr.rerank("a red thing", list(reversed(cands[:10])) + cands[10:], 5.0)  # same set, any order
    assert again.cached and again.order == first.order and teacher.calls == 1
    assert not rr.rerank("a blue thing", cands, 5.0).cached and teacher.calls == 2


@pytest.mark.parametrize("teacher,reason", [
    (ScriptedTeacher(text=lambda n: "I like number 3 best"), "teacher answer unusable (prose)"),
    (ScriptedTeacher(text=lambda n: '{"ranking": [1, 1, 2]}'), "teacher answer unusable (wrong_length"),
    (ScriptedTeacher(raises=True), "teacher error: RuntimeError: engine exploded"),
])
def test_a_bad_teacher_leaves_the_students_order(teacher, reason):
    cands = _cands(7)
    result = _reranker(teacher).rerank("a red thing", cands, 5.0)
    assert not result.reranked and result.order == [c.item_id for c in cands]
    assert result.reason.startswith(reason), result.reason


def test_a_slow_teacher_is_cut_at_the_budget_and_its_late_answer_is_kept():
    teacher = ScriptedTeacher(delay_s=1.0)
    rr = _reranker(teacher)
    t0 = time.perf_counter()
    result = rr.rerank("a red thing", _cands(5), 0.2)
    assert time.perf_counter() - t0 < 0.8
    assert not result.reranked and "within the 0.2s budget" in result.reason
    time.sleep(1.2)
    late = rr.rerank("a red thing", _cands(5), 0.2)
    assert late.reranked and late.cached  # the answer that came after the budget filled the cache


def test_a_teacher_that_cannot_run_is_reported_per_request():
    cfg = RerankConfig(enabled=True, teacher=TeacherConfig(backend="vllm"))  # vllm is not in this venv
    rr = Reranker(TeacherConfig(), cfg)
    result = rr.rerank("a red thing", _cands(3), 1.0)  # built lazily or not at all: either way a reason
    assert not result.reranked and result.order == [c.item_id for c in _cands(3)]
    assert "unavailable" in result.reason or "vllm" in result.reason, result.reason


def test_effective_teacher_config_for_query_time():
    cfg = effective_teacher_config(TeacherConfig(backend="vllm"), RerankConfig(k=20, image_size=224))
    assert cfg.vllm.max_pixels == 50176 and cfg.vllm.engine_kwargs["limit_mm_per_prompt"] == {"image": 20}
    assert cfg.vllm.max_tokens >= 96  # 20 numbers fit the answer
    o = effective_teacher_config(TeacherConfig(backend="openai"), RerankConfig(budget_s=2.0)).openai
    assert o.timeout_s == 2.0 and o.max_retries == 0
    rerank_cfg = RerankConfig(teacher=TeacherConfig(image_size=128))
    assert effective_teacher_config(TeacherConfig(), rerank_cfg).image_size == 224


def test_openai_teacher_ranks_ten_with_the_json_schema_not_the_permutation_list():
    with FakeVLM() as fake:
        teacher_cfg = TeacherConfig(backend="openai", openai={"base_url": fake.base_url, "model": "fake",
                                                              "permutation_constraint": True,
                                                              "api_key_env": "DISTILL_TEST_NO_KEY"})
        rr = Reranker(teacher_cfg, RerankConfig(enabled=True, k=10))
        result = rr.rerank("a red thing", _cands(10), 10.0)
        described = rr.describe(_cands(1)[0], "in blue", 10.0)
    assert result.reranked, result.reason
    [rank, describe] = fake.requests
    assert "structured_outputs" not in rank  # 10! answers are not enumerated (only N <= 6)
    assert rank["response_format"]["json_schema"]["schema"]["properties"]["ranking"]["maxItems"] == 10
    assert rank["max_tokens"] >= 56
    assert described.description == fake.description and "response_format" not in describe


# ------------------------------------------------------------------------------------------ uploads


def _decode(text, **cfg):
    from serve.uploads import decode_reference_image

    return decode_reference_image(text, ServeConfig(**cfg))


@pytest.mark.parametrize("text,cfg,status,fragment", [
    (png_b64(fmt="GIF"), {}, 415, "a GIF image"),
    (png_b64(fmt="BMP"), {}, 415, "a BMP image"),
    ("QUJD", {}, 415, "not a recognised image"),
    (png_b64(), {"image_types": ["jpeg"]}, 415, "a PNG image; accepted types: JPEG"),
    ("A" * 3000, {"max_image_bytes": 1024}, 413, "larger than 1024 bytes"),
    (png_b64(size=(300, 300)), {"max_image_pixels": 200 * 200}, 422, "300x300 = 90000 pixels"),
    ("no base64 here", {}, 422, "not valid base64"),
    ("iVBORw0KGgo" + "A" * 65, {}, 422, "cannot be decoded"),
])
def test_bad_uploads_name_the_field(text, cfg, status, fragment):
    from serve.uploads import UploadError

    with pytest.raises(UploadError) as err:
        _decode(text, **cfg)
    assert err.value.status == status and fragment in err.value.message
    assert err.value.message.startswith("query.reference_image: ")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_good_uploads_decode_with_or_without_a_data_url(fmt):
    img, raw = _decode(png_b64(size=(40, 30), fmt=fmt))
    assert img.size == (40, 30) and img.mode == "RGB"
    img2, raw2 = _decode(f"data:image/{fmt.lower()};base64," + png_b64(size=(40, 30), fmt=fmt))
    assert raw2 == raw


def test_query_union_errors_name_the_clients_fields():
    from pydantic import ValidationError

    from serve.search import clean_errors, search_request_model

    model = search_request_model(ServeConfig(max_k=20))

    def locs(body):
        with pytest.raises(ValidationError) as err:
            model.model_validate(body)
        errors = [{**e, "loc": ("body", *e["loc"])} for e in err.value.errors()]
        return [".".join(map(str, e["loc"])) for e in clean_errors(errors, body)]

    assert locs({"query": ""}) == ["body.query"]
    assert locs({"query": {"kind": "conversation", "turns": []}}) == ["body.query.turns"]
    assert locs({"query": {"kind": "text", "text": " "}}) == ["body.query.text"]
    blank = {"query": {"kind": "composed", "reference_item": "a", "modification": " "}}
    assert locs(blank) == ["body.query.modification"]
    assert locs({"query": {"kind": "composed", "reference_item": None, "reference_image": "QUJD",
                           "modification": "x"}}) == ["body.query"]
    model.model_validate({"query": "a red ball", "k": 3})
    model.model_validate({"query": {"kind": "composed", "reference_item": "item-1", "modification": "red"},
                          "rerank": True})
