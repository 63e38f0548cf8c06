"""`callgate replay --workflow agent --json` offline: no keys (pocketsphinx, the scripted dialog, the
offline voice), the conversation's events, and a barge-in over the bot's greeting."""

from __future__ import annotations

import asyncio
import json

import pytest

from callgate.audio import save_wav, to_int16
from callgate.cli import main
from callgate.synth import concat, silence, speech, telephone_channel
from pipelines.services import offline_tts


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No vendor keys (pocketsphinx, the scripted dialog, the offline voice) and a fresh message cache."""
    for key in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "CARTESIA_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MESSAGE_CACHE_DIR", str(tmp_path / "cache"))


def slow_decoder(monkeypatch, secs: float) -> None:
    """Every offline decode takes `secs` longer (a loaded CPU), counted in flight all the while."""
    from pipelines.services import sphinx

    transcribe = sphinx.DecoderPool.transcribe

    async def slow(self, pcm, rate=8000):
        text = await transcribe(self, pcm, rate)
        await asyncio.sleep(secs)
        return text

    monkeypatch.setattr(sphinx.DecoderPool, "transcribe", slow)


def test_replay_agent_offline_prints_conversation_events(tmp_path, capsys, monkeypatch):
    # The agent greets first (inbound, amd off); the caller cuts in 3.5 s into the call, then waits. The
    # replay runs on the wall clock: 3.5 s leaves the greeting's first word room on a loaded machine
    # (cut in before any word is heard and the context rightly keeps nothing: the test below).
    caller = concat(silence(3.5), speech("Stop, stop, I need to change my appointment please.", voice="en-us+m3"))
    wav = save_wav(tmp_path / "call.wav", to_int16(telephone_channel(concat(caller, silence(7.0)))))
    rc = main(["replay", str(wav), "--workflow", "agent", "--amd", "off", "--json", "--tail", "0"])
    assert rc == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    for name in ("conversation_start", "bot_turn_start", "barge_in", "interruption", "user_transcript", "bot_turn_end"):
        assert name in kinds, kinds
    inter = next(e for e in events if e["event"] == "interruption")
    summary = events[-1]
    assert summary["event"] == "summary"
    first_bot = next(t for t in summary["transcript"] if t["role"] == "bot")
    # the context holds only what was heard: a strict prefix of the greeting's words
    heard, said = inter["heard_text"].split(), first_bot["text"].split()
    assert heard and heard == said[: len(heard)] and len(heard) < len(said) and inter["dropped_ms"] > 0
    assert first_bot["interrupted"] and first_bot["heard"] == inter["heard_text"]
    assert any(t["role"] == "caller" for t in summary["transcript"])


def test_replay_agent_a_late_greeting_does_not_start_over_a_caller_who_is_talking(tmp_path, capsys, monkeypatch):
    # The greeting's synthesis is slow (a cold voice, a slow vendor): it is ready 3 s into the call, while
    # the caller (who spoke first, from 1 s to about 4 s) is still talking.
    synthesize, calls = offline_tts.LocalVoice.asynthesize, []

    async def slow_first(self, text):
        calls.append(text)
        if len(calls) == 1:
            await asyncio.sleep(3.0)
        return await synthesize(self, text)

    monkeypatch.setattr(offline_tts.LocalVoice, "asynthesize", slow_first)
    caller = concat(silence(1.0), speech("Hello, yes, I am calling about my appointment on Friday.", voice="en-us+m3"))
    # 10 s of silence after the words: on an oversubscribed CPU the offline decode of this 3 s turn has
    # taken 6 s, and the caller must still be on the line when the words come for the turn to be answered
    wav = save_wav(tmp_path / "call.wav", to_int16(telephone_channel(concat(caller, silence(10.0)))))
    assert main(["replay", str(wav), "--workflow", "agent", "--amd", "off", "--json", "--tail", "0"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    first = lambda kind: next(e for e in events if e["event"] == kind)  # noqa: E731
    talk_start, bot_start, barge = first("user_turn_start"), first("bot_turn_start"), first("barge_in")
    assert talk_start["t_ms"] < bot_start["t_ms"] < first("speech_end")["t_ms"]  # the greeting came mid-speech
    # it yielded at once to the speech already going on (dated from the caller's onset, not the bot's start)
    assert barge["onset_ms"] < bot_start["t_ms"] and barge["t_ms"] - bot_start["t_ms"] <= 400
    summary = events[-1]
    greeting = next(t for t in summary["transcript"] if t["role"] == "bot")
    assert greeting["interrupted"] and greeting["heard"] == ""
    # the caller's turn is answered
    assert any(e["event"] == "bot_turn_start" and e["turn"] == 2 for e in events)


def test_replay_agent_waits_for_words_the_offline_stt_is_still_decoding(tmp_path, capsys, monkeypatch):
    """On a loaded CPU the offline STT's words can come seconds after the caller stopped. The turn waits
    for them (it used to be dropped as wordless noise 1.2 s after the speech, and the caller, waiting for
    an answer, got none)."""
    slow_decoder(monkeypatch, 3.0)
    # the greeting plays first (inbound, amd off); the caller answers once it is over
    caller = concat(silence(7.0), speech("Yes, I can talk now.", voice="en-us+m3"))
    wav = save_wav(tmp_path / "call.wav", to_int16(telephone_channel(concat(caller, silence(8.0)))))
    assert main(["replay", str(wav), "--workflow", "agent", "--amd", "off", "--json", "--tail", "0"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    said = [e for e in events if e["event"] == "user_transcript"]
    assert said and said[0]["end_ms"] > 7000, [e["event"] for e in events]
    assert [e for e in events if e["event"] == "bot_turn_start" and e["t_ms"] > said[0]["end_ms"]]


def test_replay_agent_keeps_the_last_words_of_a_caller_who_hangs_up_while_they_decode(tmp_path, capsys, monkeypatch):
    """The caller speaks and hangs up at once; the offline STT's words come after the hang-up. They are
    the caller's last words: the transcript (and so the call record) keeps them, unanswered (they used to
    be dropped because the call had ended)."""
    slow_decoder(monkeypatch, 2.0)
    caller = concat(silence(7.0), speech("Yes, I can talk now.", voice="en-us+m3"))
    wav = save_wav(tmp_path / "call.wav", to_int16(telephone_channel(concat(caller, silence(1.0)))))
    assert main(["replay", str(wav), "--workflow", "agent", "--amd", "off", "--json", "--tail", "0"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    hangup = kinds.index("remote_hangup")
    said = [e for e in events if e["event"] == "user_transcript"]
    assert len(said) == 1 and said[0]["after_end"] and said[0]["text"], kinds
    assert kinds.index("user_transcript") > hangup  # decoded after the hang-up ...
    assert said[0]["start_ms"] >= 6900 and said[0]["end_ms"] <= events[-1]["audio_ms"]  # ... dated when spoken
    caller_rows = [t for t in events[-1]["transcript"] if t["role"] == "caller"]
    assert [t["text"] for t in caller_rows] == [said[0]["text"]]
    assert not [e for e in events if e["event"] == "bot_turn_start" and e["turn"] > 1]  # unanswered


def test_replay_agent_answers_words_that_come_after_their_speech_was_given_up_as_noise(tmp_path, capsys, monkeypatch):
    """A final that reaches the workflow after the STT has said it is done (the frame travels as data; the
    audio frames behind it overtake it on a loaded CPU) finds the speech already given up as wordless
    noise. The words revive it: the caller is answered (they used to be dropped, and the caller got
    silence: seen in CI)."""
    from pipecat.frames.frames import TranscriptionFrame

    from pipelines.services import offline_stt

    async def overtaken(self, audio):
        text = await self._pool.transcribe(audio, self.sample_rate)  # not counted in flight at all
        await asyncio.sleep(2.0)  # ... and late: past the 1.2 s the workflow waits for words
        if text:
            yield TranscriptionFrame(text, self._user_id, "", finalized=True)

    monkeypatch.setattr(offline_stt.PocketsphinxSTTService, "run_stt", overtaken)
    caller = concat(silence(7.0), speech("Yes, I can talk now.", voice="en-us+m3"))
    wav = save_wav(tmp_path / "call.wav", to_int16(telephone_channel(concat(caller, silence(8.0)))))
    assert main(["replay", str(wav), "--workflow", "agent", "--amd", "off", "--json", "--tail", "0"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    said = [e for e in events if e["event"] == "user_transcript"]
    assert len(said) == 1 and said[0]["start_ms"] >= 6900 and "after_end" not in said[0], [e["event"] for e in events]
    assert said[0]["t_ms"] - said[0]["end_ms"] >= 2000  # it did come late
    assert [e for e in events if e["event"] == "bot_turn_start" and e["turn"] == 2]  # and it was answered
