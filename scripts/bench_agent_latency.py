"""Voice-to-voice latency of the agent over a scripted 10-turn conversation, with vendor stand-ins set to
published median latencies, through the real server and a real WebSocket.

Stand-in latencies (and why):
- Deepgram: final transcript 150 ms after Finalize (Pipecat sends Finalize when the VAD says the caller
  stopped, callgate's endpointer also on its tentative turn end with LISTEN_FINALIZE_ON_TENTATIVE; Deepgram documents finalize responses
  in the ~100-200 ms range for Nova streaming). Interims reveal the words as they are spoken, all but the
  last; an interim with all of them comes `--interim-tail-ms` (default 200) of quiet after the last word
  (a streaming STT's interims trail the audio by a few hundred ms). That interim is what a greedy reply
  is asked on; `--interim-tail-ms none` sends the last word only with the final (then greedy cannot start
  before the final words are in, and saves nothing on complete turns);
- OpenAI: first token 350 ms (typical time-to-first-token of gpt-4.1-mini / gpt-4o-mini chat completions
  streaming, as in public TTFT trackers);
- Cartesia: first audio byte 100 ms (Cartesia's own Sonic figure is ~90-100 ms model latency).

Per turn the server measures (GET /calls/{sid} `latency`): caller speech end -> first bot audio sent to
Twilio, and -> first bot audio played (the turn-start mark's echo), split into endpointing (the VAD's
silence hangover), STT final, LLM first token, TTS first byte and the pipeline's own share (the rest).
The simulator adds the caller's view: end of the caller's line -> bot audio starts playing.

Modes (`--modes`, each a fresh server and the same conversation): `greedy` (the default settings: the
semantic endpointer ends turns, the LLM is asked on its tentative end with the interim words and the
reply held until the final words are in and the same), `non_greedy` (everything else identical; the
LLM asked only once the turn has closed), `greedy_finalize` / `non_greedy_finalize` (the same with
LISTEN_FINALIZE_ON_TENTATIVE: Deepgram's Finalize on the tentative end too) and `vad`
(LISTEN_ENDPOINTER_ENDS_TURNS=false: VAD end plus the STT final, the agent's behaviour before issue 9).
Voice-to-voice of complete turns is printed for each, then the drop of greedy versus the others, and
whether each line was answered as one whole caller turn (a premature end splits a line).

`--timeline` prints each turn's events in ms after the caller's speech end (server's audio clock): the
tentative and final turn ends, the greedy request, the STT's final words, the reply's first audio sent.

    python scripts/bench_agent_latency.py [--turns 10] [--network-delay-ms 0] [--modes greedy,non_greedy,vad]
                                          [--interim-tail-ms 200|none] [--timeline]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_harness import agent_server, pct, scripted_call  # noqa: E402

AGENT = """name = "bench"
system_prompt = "Benchmark agent."
first_message = "Hi, this is the benchmark agent."
end_call_phrases = []
max_call_secs = 600
"""
LINES = [
    "I would like to book a cleaning.", "Next Tuesday if possible.", "In the morning please.",
    "Nine o'clock is fine.", "Can you also check my insurance?", "It is with Blue Cross.",
    "My member number is on the card.", "Yes, I have it here.", "Okay, thank you.", "That is everything.",
]  # fmt: skip
REPLY = "Sure, I can help with that. Let me check what we have for you."
PARTS = ("endpointing_ms", "stt_final_ms", "turn_closed_ms", "llm_asked_ms", "llm_first_token_ms",
         "tts_first_byte_ms", "pipeline_ms", "first_audio_sent_ms", "first_audio_played_ms")  # fmt: skip
TIMELINE = ("turn_end", "greedy_reply", "user_transcript", "greedy_confirmed", "greedy_cancelled")


MODES = {
    "greedy": {"listen_endpointer_ends_turns": True, "listen_greedy_replies": True},
    "non_greedy": {"listen_endpointer_ends_turns": True, "listen_greedy_replies": False},
    # LISTEN_FINALIZE_ON_TENTATIVE: Deepgram's Finalize already on the endpointer's tentative end
    "greedy_finalize": {"listen_endpointer_ends_turns": True, "listen_greedy_replies": True,
                        "listen_finalize_on_tentative": True},
    "non_greedy_finalize": {"listen_endpointer_ends_turns": True, "listen_greedy_replies": False,
                            "listen_finalize_on_tentative": True},
    "vad": {"listen_endpointer_ends_turns": False, "listen_greedy_replies": False},
}


async def run_mode(mode: str, args: argparse.Namespace, lines: list[str]) -> dict[str, list[float]]:
    """One conversation on a fresh server in `mode`; prints its table, returns the per-turn figures."""
    from simulator.rest import RestStandIn
    from simulator.script import parse_script
    from simulator.vendors import CartesiaStandIn, DeepgramStandIn, OpenAIStandIn
    from simulator.vendors.openai import Reply

    dg = DeepgramStandIn(
        transcriber=None, final_ms=150, interim_every_ms=250, endpoint_ms=800, interim_tail_ms=args.interim_tail_ms
    ).start()
    oa = OpenAIStandIn(default=Reply(text=REPLY), first_token_ms=350, token_interval_ms=20).start()
    ct = CartesiaStandIn(first_audio_ms=100, realtime_factor=4.0).start()
    dg.say(*lines)
    script = parse_script(
        {"voice": "en-us+f2", "tail_ms": 1500, "step": [{"say": line, "gap_ms": 400} for line in lines]}
    )
    try:
        async with RestStandIn() as rest:
            with agent_server(rest.base_url, AGENT, dg, oa, ct, **MODES[mode]) as base:
                report, record = await scripted_call(base, rest, script, args.network_delay_ms)
    finally:
        for v in (dg, oa, ct):
            v.stop()
    turns = record.get("latency", [])
    events = [e.get("event") for e in record.get("events", [])]
    if args.timeline:
        print_timeline(mode, record)
    print(f"\n[{mode}] {len(turns)} turns measured by the server (ms); LLM requests {len(oa.requests)}, "
          f"greedy replies {events.count('greedy_reply')}, confirmed {events.count('greedy_confirmed')}, "
          f"scrapped {events.count('greedy_cancelled')}")
    print(f"  {'part':<32}{'p50':>8}{'p95':>8}{'max':>8}")
    out: dict[str, list[float]] = {}
    for part in PARTS:
        vals = [t[part] for t in turns if t.get(part) is not None]
        out[part] = vals
        if vals:
            print(f"  {part:<32}{pct(vals, 50):>8.0f}{pct(vals, 95):>8.0f}{max(vals):>8.0f}")
    lines_ev = report.of("caller_line")
    starts = [e["t_ms"] for e in report.of("bot_audio_start")]
    v2v = [min((s for s in starts if s >= ln["end_ms"]), default=None) for ln in lines_ev]
    v2v = [s - ln["end_ms"] for s, ln in zip(v2v, lines_ev, strict=True) if s is not None]
    out["caller_v2v"] = v2v
    print(f"  {'caller: line end -> bot audio':<32}{pct(v2v, 50):>8.0f}{pct(v2v, 95):>8.0f}{max(v2v, default=0):>8.0f}")
    # Premature ends show as a line split into two caller turns (and late ones as two lines merged): the
    # server's transcript must hold each line once, whole, in order.
    callers = [t["text"] for t in record.get("transcript", []) if t.get("role") == "caller"]
    whole = sum(a.strip() == b for a, b in zip(callers, lines, strict=False))
    out["turns_whole"] = [float(whole), float(len(callers))]
    print(f"  caller turns recorded {len(callers)} for {len(lines)} lines; each one whole line: {whole}/{len(lines)}"
          + ("" if callers == lines else f"  (recorded: {callers})"))
    share = [t["pipeline_ms"] for t in turns if t.get("pipeline_ms") is not None]
    if share:
        print(f"  pipeline's own share of voice-to-voice: p95 {pct(share, 95):.0f} ms (target <= 150 ms)")
    return out


def print_timeline(mode: str, record: dict) -> None:
    """Per bot reply: the server's listening and reply events in ms after the caller's speech end."""
    events = record.get("events", [])
    print(f"\n[{mode}] timeline, ms after the caller's speech end (audio clock): tentative end T, final end F, "
          "greedy request G, STT final words W, greedy kept K / scrapped X; first audio sent (wall)")
    marks = {"turn_end": "F", "greedy_reply": "G", "user_transcript": "W", "greedy_confirmed": "K",
             "greedy_cancelled": "X"}  # fmt: skip
    for lat in record.get("latency", []):
        end = lat["speech_end_ms"]
        row = [
            f"{'T' if e['event'] == 'turn_end' and e.get('tentative') else marks[e['event']]}{e['t_ms'] - end:+.0f}"
            for e in events
            if e.get("event") in TIMELINE and end - 50 <= e["t_ms"] <= end + 1500
        ]
        print(f"  turn {lat['turn']:>2}: {' '.join(row):<52} sent {lat.get('first_audio_sent_ms')}")


async def main(args: argparse.Namespace) -> int:
    lines = (LINES * ((args.turns + len(LINES) - 1) // len(LINES)))[: args.turns]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        print(f"unknown mode(s) {', '.join(bad)}; choose from {', '.join(MODES)}", file=sys.stderr)
        return 2
    tail = "never" if args.interim_tail_ms is None else f"{args.interim_tail_ms:g} ms after the last word"
    print(f"{args.turns}-turn conversation of complete turns through the real server, per mode (stand-ins: "
          f"Deepgram final 150 ms, all-words interim {tail}, OpenAI first token 350 ms, Cartesia first byte 100 ms; "
          f"WAN {args.network_delay_ms:g} ms) ...", flush=True)
    results = {m: await run_mode(m, args, lines) for m in modes}
    print("\nvoice-to-voice on complete turns, p50 (ms): caller's speech end -> first bot audio sent | played")
    for m, r in results.items():
        whole, n = r["turns_whole"]
        print(f"  {m:<20}{pct(r['first_audio_sent_ms'], 50):>8.0f} |{pct(r['first_audio_played_ms'], 50):>8.0f}"
              f"   (caller's view, line end -> bot audio: {pct(r['caller_v2v'], 50):.0f}; lines answered whole "
              f"{whole:.0f}/{len(lines)}, caller turns {n:.0f})")
    for other in ("vad",):
        if "greedy" in results and other in results:
            d = pct(results[other]["first_audio_sent_ms"], 50) - pct(results["greedy"]["first_audio_sent_ms"], 50)
            print(f"default (greedy) vs {other}: voice-to-voice p50 {'drops' if d >= 0 else 'rises'} by {abs(d):.0f} ms")
    for gm, nm in (("greedy", "non_greedy"), ("greedy_finalize", "non_greedy_finalize")):
        if gm in results and nm in results:
            g, n = results[gm], results[nm]
            d = pct(n["first_audio_sent_ms"], 50) - pct(g["first_audio_sent_ms"], 50)
            dc = pct(n["caller_v2v"], 50) - pct(g["caller_v2v"], 50)
            print(f"{gm} vs {nm}: voice-to-voice p50 {'drops' if d >= 0 else 'rises'} by {abs(d):.0f} ms (server) / "
                  f"{'drops' if dc >= 0 else 'rises'} by {abs(dc):.0f} ms (caller's view)")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--network-delay-ms", type=float, default=0.0)
    ap.add_argument("--modes", default="greedy,non_greedy,vad", help=f"comma-separated, of: {', '.join(MODES)}")
    ap.add_argument("--interim-tail-ms", type=lambda v: None if v.lower() == "none" else float(v), default=200.0,
                    help="quiet after the last word when the Deepgram stand-in's interim holds all words (none: never)")
    ap.add_argument("--timeline", action="store_true", help="print each turn's events after the speech end")
    raise SystemExit(asyncio.run(main(ap.parse_args())))
