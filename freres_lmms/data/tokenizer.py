"""A small byte-level BPE tokenizer trained locally, with the Qwen special tokens.

Real Qwen tokenizers cannot be downloaded here; this one has the same special tokens, the same
chat format and loads through ``AutoTokenizer``/``AutoProcessor`` like the real one.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Order matters only for readability; ids are whatever training assigns.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The Qwen-VL chat format: a default system turn, visual placeholders inside user turns.
CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) -%}{%- set video_count = namespace(value=0) -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "<|im_start|>system{{ '\\n' }}You are a helpful assistant.<|im_end|>{{ '\\n' }}"
    "{%- endif -%}"
    "<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part -%}"
    "{%- set image_count.value = image_count.value + 1 -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{%- set video_count.value = video_count.value + 1 -%}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in part -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "<|im_end|>{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\\n' }}{%- endif -%}"
)

_WORDS = (
    "the a an of in on at to and or is are was were what which where how many who does do did "
    "object objects shape shapes circle square triangle colour color red green blue yellow white "
    "purple orange cyan moving moves move direction left right up down top bottom first last "
    "appears appear changed changes change order event events video frame frames start end count "
    "answer option options question best only give letter with the number one two three four five "
    "zero six seven eight nine you helpful assistant system user please describe scene background "
    "A B C D E ( ) . , ? : seconds time none them end ends quadrant"
)


def corpus() -> list[str]:
    """Text the tokenizer is trained on: the synthetic task's vocabulary plus digits."""
    lines = [_WORDS, " ".join(str(i) for i in range(200))]
    lines += [f"Question: {w}? Option: (A) {w} (B) {w}s (C) {w}ed (D) none" for w in _WORDS.split()]
    return lines


def train_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE and wrap it as a transformers fast tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=32768,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
