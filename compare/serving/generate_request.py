"""What ``POST /api/generate`` takes: its fields, parsed from JSON and checked against the model.

A request names a length, a temperature, a prime, an implementation and a seed, every one
optional. parse_generate_request fills in the defaults and refuses anything the model cannot
sample (a character it never saw, an implementation it lacks) with a RequestError whose message
the page shows as it is. ModelInfo, what the checks need to know of the checkpoint, is also what
``GET /api/info`` answers.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import dataclass
from typing import Any

MAX_LENGTH = 10_000  # characters per request: about 0.6 s of sampling with manual, 2 s with torch
MAX_PRIME = 1_000  # characters: the prime is run through the model too
MAX_TEMPERATURE = 1.5  # the slider's range; above it the text is mostly noise


@dataclass(frozen=True)
class ModelInfo:
    """What the page shows about the checkpoint."""

    run_name: str
    impl: str  # the implementation that trained it
    cell: str  # rnn, lstm or gru
    step: int
    val_loss: float | None  # nats per character; None if the run never validated
    vocab: str
    implementations: tuple[str, ...]  # those the page may sample with


class RequestError(ValueError):
    """A bad request; the message is shown on the page as it is."""


@dataclass(frozen=True)
class GenerateRequest:
    """The fields of POST /api/generate; every one may be left out."""

    length: int = 500
    temperature: float = 0.8
    prime: str = ""  # "": start after a newline, as python -m compare.sample does
    impl: str | None = None  # None: the implementation that trained the checkpoint
    seed: int | None = None  # None: a fresh random seed, sent back so the text can be reproduced


def parse_generate_request(body: bytes, info: ModelInfo) -> GenerateRequest:
    """The request in ``body`` (JSON) with the defaults filled in; RequestError says what is wrong."""
    try:
        fields = json.loads(body)
    except RecursionError:  # [[[[...: nested deeper than the parser goes
        raise RequestError("the request body must be JSON nested less deeply") from None
    except ValueError as error:  # not JSON, not UTF-8, or a number of more digits than int() takes (4,300)
        detail = " with numbers of at most 4,300 digits" if "digits" in str(error) else ""
        raise RequestError(f"the request body must be JSON{detail}") from None
    if not isinstance(fields, dict):
        raise RequestError("the request body must be a JSON object")
    unknown = sorted(set(fields) - {field.name for field in dataclasses.fields(GenerateRequest)})
    if unknown:  # a misspelt field would otherwise be ignored without a word
        raise RequestError(f"unknown fields: {', '.join(unknown)}")
    # A field left out takes its default; one that is there is checked as it is (null, false, 0, [] and {}
    # included), never replaced by the default because it looks empty.
    given = {**dataclasses.asdict(GenerateRequest(impl=info.impl)), **fields}
    return GenerateRequest(
        length=checked_length(given["length"]),
        temperature=checked_temperature(given["temperature"]),
        prime=checked_prime(given["prime"], info.vocab),
        impl=checked_impl(given["impl"], info.implementations),
        seed=checked_seed(fields["seed"]) if "seed" in fields else secrets.randbelow(2**32),
    )


def shown(value: object) -> str:
    """``value`` as the client wrote it (JSON), cut short: a 60 kB string makes no better message."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else f"{text[:36]}..."


def is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a length


# The checked_* functions take a field as JSON parsing left it (any JSON value: Any, as json.loads
# types it) and return it as its type, or raise RequestError.
def checked_length(length: Any) -> int:
    if not is_integer(length) or not 1 <= length <= MAX_LENGTH:
        raise RequestError(f"length must be a whole number from 1 to {MAX_LENGTH:,}, got {shown(length)}")
    return length


def checked_temperature(temperature: Any) -> float:
    is_number = is_integer(temperature) or isinstance(temperature, float)
    # "not in range" rather than "out of range" also refuses NaN, which JSON parsing lets through
    if not (is_number and 0 <= temperature <= MAX_TEMPERATURE):
        raise RequestError(
            f"randomness (temperature) must be a number from 0 to {MAX_TEMPERATURE}, got {shown(temperature)}"
        )
    return float(temperature)


def checked_prime(prime: Any, vocab: str) -> str:
    if not isinstance(prime, str):
        raise RequestError(
            f"prime must be text (a JSON string) of at most {MAX_PRIME:,} characters, got {shown(prime)}"
        )
    if len(prime) > MAX_PRIME:
        raise RequestError(f"prime must be text of at most {MAX_PRIME:,} characters, got {len(prime):,} characters")
    unknown = sorted(set(prime) - set(vocab))
    if unknown:  # a set difference: Vocab.encode would build its table of every code point (4 MB) per request
        raise RequestError(f"the prime has characters not in the vocabulary: {''.join(unknown)!r}")
    return prime


def checked_impl(impl: Any, implementations: tuple[str, ...]) -> str:
    if impl not in implementations:
        raise RequestError(f"impl must be one of {', '.join(implementations)}, got {shown(impl)}")
    return impl


def checked_seed(seed: Any) -> int:
    if not is_integer(seed) or not 0 <= seed < 2**63:
        raise RequestError(f"seed must be a whole number from 0 to 2**63 - 1, got {shown(seed)}")
    return seed
