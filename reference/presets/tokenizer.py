"""Real tokenizers for the random-weight demo checkpoints, trained with Hugging Face's ``tokenizers`` library.

There are no model hubs here, so ``kiln init-checkpoint`` trains a tokenizer of the kind each architecture's HF
family uses on ``corpus.txt`` (a few KB of prose written for this project, released with it; no third-party text):

* GPT-NeoX and Mega: byte-level BPE (GPT-NeoX's and RoBERTa's kind), NFC-normalised; Mega encoders add RoBERTa's
  ``<s> A </s></s> B </s>`` template, decoders add nothing (as GPT-NeoX's tokenizer).
* MRA, MegatronBERT, Nystromformer: BERT's WordPiece (cased), ``[CLS] A [SEP] B [SEP]``, the second segment typed 1
  where the model has two token types.

The vocabulary is sized exactly to the model's ``vocab_size``: special tokens take the ids ``config.json`` gives
them (bos, eos, pad; the others the lowest free ids), training fills what the corpus supports, and the rest are
reserved entries that no text encodes to (BERT's ``[unused*]`` convention), so every id is below ``vocab_size`` and
every id of the model has a token. A byte-level vocabulary too small for all 256 bytes (the tiny Mega) keeps the
corpus's bytes and maps the others to ``<unk>``. The files are HF's: ``tokenizer.json``, ``tokenizer_config.json``
and ``special_tokens_map.json``, which ``transformers.AutoTokenizer`` loads as they are (tested).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Mapping
from importlib import resources
from typing import Any

from tensorkiln.runtime.errors import UsageError

CORPUS_NAME = "corpus.txt"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
#: Byte-level vocabularies need the 256 bytes; below this many merges on top, keep only the corpus's bytes.
MIN_MERGES = 32
#: WordPiece training marks continuation characters with private-use code points from here (plane 15).
CONTINUATION = 0xF0000
#: Special ids beyond this are not something a demo preset needs (GPT-2 puts eos last; none of ours does).
MAX_SPECIAL_ID = 64


@dataclasses.dataclass(frozen=True)
class Family:
    """One tokenizer family: its kind, its special tokens by role, and the config key that fixes each one's id."""

    kind: str  # "byte-bpe" or "wordpiece"
    roles: dict[str, str]  # role (bos, eos, pad, unk, mask, cls, sep) -> token
    config_ids: dict[str, str]  # role -> config.json key holding its id
    reserved: str  # the format of reserved vocabulary entries


NEOX = Family("byte-bpe", {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": "<|endoftext|>",
                           "pad": "<|padding|>"},
              {"bos": "bos_token_id", "eos": "eos_token_id", "pad": "pad_token_id"}, "<|reserved_{}|>")
ROBERTA = Family("byte-bpe", {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>",
                              "cls": "<s>", "sep": "</s>"},
                 {"bos": "bos_token_id", "eos": "eos_token_id", "pad": "pad_token_id"}, "<|reserved_{}|>")
BERT = Family("wordpiece", {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
              {"pad": "pad_token_id", "cls": "bos_token_id", "sep": "eos_token_id"}, "[unused{}]")
FAMILIES = {"gpt_neox": NEOX, "mega": ROBERTA, "mra": BERT, "megatron-bert": BERT, "nystromformer": BERT}


class TokenizerBuildError(UsageError):
    """A config whose special ids or vocabulary size no tokenizer of its family can match."""


def corpus() -> str:
    return resources.files(__package__).joinpath(CORPUS_NAME).read_text(encoding="utf-8")


def special_layout(family: Family, config: Mapping[str, Any]) -> list[str]:
    """The special tokens in id order (ids 0..n-1): config.json's ids first, the other specials in the lowest free
    ids, holes filled with reserved specials so that every config id lands where config.json says."""
    wanted: dict[str, int] = {}
    for role, key in family.config_ids.items():
        value = config.get(key)
        if value is None:
            continue
        token = family.roles[role]
        if not isinstance(value, int) or not 0 <= value < MAX_SPECIAL_ID:
            raise TokenizerBuildError(f"config {key} = {value!r}: a demo tokenizer puts special tokens at ids below "
                                      f"{MAX_SPECIAL_ID}")
        if wanted.get(token, value) != value:
            raise TokenizerBuildError(f"config.json gives {token!r} two ids ({wanted[token]} and {value})")
        wanted[token] = value
    if len(set(wanted.values())) != len(wanted):
        raise TokenizerBuildError(f"config.json gives two special tokens one id: {wanted}")
    tokens = list(dict.fromkeys(family.roles.values()))
    size = max([len(tokens), *[i + 1 for i in wanted.values()]])
    slots: list[str | None] = [None] * size
    for token, index in wanted.items():
        slots[index] = token
    free = iter(t for t in tokens if t not in wanted)
    for index, slot in enumerate(slots):
        if slot is None:
            slots[index] = next(free, None) or family.reserved.format(f"special_{index}")
    return [s for s in slots if s is not None]


def _marked(word: str) -> str:
    """A word for the WordPiece training: characters after the first become private-use code points, so that a
    continuation character is a symbol of its own (WordPiece's ``##c``) and in the trainer's sorted alphabet."""
    return word[0] + "".join(chr(CONTINUATION + ord(c)) for c in word[1:])


def _unmarked(token: str) -> str:
    if ord(token[0]) >= CONTINUATION:
        return "##" + "".join(chr(ord(c) - CONTINUATION) for c in token)
    return token[0] + "".join(chr(ord(c) - CONTINUATION) for c in token[1:])


def _wordpiece_vocab(specials: list[str], vocab_size: int) -> dict[str, int]:
    """A WordPiece vocabulary from HF's BPE trainer, deterministically.

    ``WordPieceTrainer`` numbers its ``##`` symbols in hash-map order, so ties between equally frequent merges go
    differently from run to run. Training the library's BPE trainer on words whose continuation characters are
    marked (:func:`_marked`) puts every symbol in its sorted alphabet, which makes the merges reproducible; the
    result is read back as word-initial pieces and ``##`` pieces. The alphabet keeps the corpus's most frequent
    characters (ties by code point) that fit ``vocab_size``; words with other characters are left out, as
    WordPiece encodes them as ``[UNK]``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    text = normalizers.BertNormalizer(lowercase=False).normalize_str(corpus())
    words = Counter(word for word, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(text))
    chars = Counter(c for word, count in words.items() for c in word for _ in range(count))
    ranked = sorted(chars, key=lambda c: (-chars[c], c))
    for size in range(len(ranked), 0, -1):
        kept = set(ranked[:size])
        usable = {w: n for w, n in words.items() if set(w) <= kept}
        alphabet = {c for w in usable for c in _marked(w)}
        if len(specials) + len(alphabet) + MIN_MERGES // 4 <= vocab_size:
            break
    else:
        raise TokenizerBuildError(f"vocab_size {vocab_size} is too small for a WordPiece tokenizer")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=sorted(alphabet),
                                  show_progress=False)
    tokenizer.train_from_iterator([" ".join(_marked(w) for _ in range(n)) for w, n in sorted(usable.items())],
                                  trainer)
    return {token if token in specials else _unmarked(token): index
            for token, index in tokenizer.get_vocab().items()}


def _train(family: Family, specials: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if family.kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(_wordpiece_vocab(specials, vocab_size), unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)
        tokenizer.add_special_tokens(specials)  # in the vocabulary already: this marks them special (whole, skipped)
        return tokenizer
    full_alphabet = vocab_size >= 256 + len(specials) + MIN_MERGES
    unk = family.roles.get("unk")
    if not full_alphabet and unk in (None, family.roles.get("eos")):
        raise TokenizerBuildError(f"vocab_size {vocab_size} cannot hold the 256 bytes of a byte-level tokenizer, and "
                                  "this family has no unknown token to stand for the missing ones")
    tokenizer = Tokenizer(models.BPE(unk_token=None if full_alphabet else unk))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if full_alphabet else [])
    tokenizer.train_from_iterator([corpus()], trainer)
    return tokenizer


def _post_processor(family: Family, config: Mapping[str, Any], causal: bool, ids: Mapping[str, int]):
    from tokenizers import processors

    if family.kind == "byte-bpe":
        if causal or "cls" not in family.roles:  # the text as written: GPT-NeoX's tokenizer, decoders' prompts
            return processors.ByteLevel(trim_offsets=False)
        cls, sep = family.roles["cls"], family.roles["sep"]
        # (sep, cls) positionally: tokenizers 0.23 renamed the keyword cls= to cls_token=
        return processors.RobertaProcessing((sep, ids[sep]), (cls, ids[cls]), trim_offsets=True, add_prefix_space=False)
    second = 1 if (config.get("type_vocab_size") or 0) >= 2 else 0  # MRA has one token type
    return processors.TemplateProcessing(single="[CLS] $A [SEP]", pair=f"[CLS] $A [SEP] $B:{second} [SEP]:{second}",
                                         special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])


def _sized(tokenizer, family: Family, vocab_size: int):
    """The trained tokenizer with reserved entries appended to its model vocabulary up to exactly ``vocab_size``.
    They are reachable by id only: no merge or word piece produces them."""
    from tokenizers import Tokenizer

    data = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    taken = set(vocab) | {t["content"] for t in data["added_tokens"]}
    next_id, index = tokenizer.get_vocab_size(), 0
    while next_id < vocab_size:
        name = family.reserved.format(index)
        index += 1
        if name not in taken:
            vocab[name] = next_id
            next_id += 1
    return Tokenizer.from_str(json.dumps(data))


def _max_length(config: Mapping[str, Any]) -> int:
    return int(config.get("max_position_embeddings") or config.get("max_positions") or 512)


def build_tokenizer_files(config: Mapping[str, Any], causal: bool) -> dict[str, str]:
    """``{file name: text}`` of a tokenizer for ``config`` (its model_type's family, exactly ``vocab_size`` ids).
    ``causal``: the checkpoint generates text (no special tokens around prompts, left padding)."""
    family = FAMILIES.get(config["model_type"])
    if family is None:
        raise TokenizerBuildError(f"no demo tokenizer family for model_type {config['model_type']!r}")
    vocab_size = int(config["vocab_size"])
    specials = special_layout(family, config)
    if len(specials) >= vocab_size:
        raise TokenizerBuildError(f"vocab_size {vocab_size} leaves no room beside {len(specials)} special tokens")
    tokenizer = _train(family, specials, vocab_size)
    ids = {token: tokenizer.token_to_id(token) for token in specials}
    if any(ids[token] != index for index, token in enumerate(specials)):
        raise AssertionError(f"the trainer moved the special tokens: {ids}")  # a tokenizers change; never expected
    tokenizer.post_processor = _post_processor(family, config, causal, ids)
    tokenizer = _sized(tokenizer, family, vocab_size)
    roles = {f"{role}_token": token for role, token in family.roles.items()}
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if (config.get("type_vocab_size") or 0) else [])
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast", **roles, "model_max_length": _max_length(config),
        "padding_side": "left" if causal else "right", "clean_up_tokenization_spaces": False,
        "model_input_names": names,
    }
    return {
        "tokenizer.json": tokenizer.to_str(pretty=True) + "\n",
        "tokenizer_config.json": json.dumps(tokenizer_config, indent=2) + "\n",
        "special_tokens_map.json": json.dumps(roles, indent=2) + "\n",
    }


def generation_config_text(config: Mapping[str, Any]) -> str:
    """HF's ``generation_config.json`` for a causal LM, from the model config's special ids (as HF writes it)."""
    keys = ("bos_token_id", "eos_token_id", "pad_token_id")
    return json.dumps({k: config[k] for k in keys if config.get(k) is not None}, indent=2) + "\n"
