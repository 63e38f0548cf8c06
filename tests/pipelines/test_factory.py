"""The call factory: start-up warm-up loads the models that calls share."""

from __future__ import annotations

from callgate.settings import get_settings
from pipelines.factory import warm_up
from pipelines.message import MessageCache
from processors.endpointer import shared_text_model
from processors.interruption import shipped_cue


def test_warm_up_loads_the_conversation_models_every_call_shares(tmp_path):
    shared_text_model.cache_clear()
    shipped_cue.cache_clear()
    warm_up(get_settings(), MessageCache(tmp_path))
    assert shared_text_model.cache_info().currsize == 1 and shipped_cue.cache_info().currsize == 1
