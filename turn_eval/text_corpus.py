"""Everyday caller sentences for the transcript-completeness model, generated from a seed.

Templates with slots (word lists below) give complete caller turns: short replies ("yes", "nine is
fine"), times and dates, requests, names, numbers read in groups, addresses, problems, questions,
lists, hesitations. A `|` in a template marks a point where callers pause mid-turn ("my number is |
four one five | ..."); the prefix before each mark is an *unfinished* turn, and so is every prefix that
stops on a word that cannot end an English sentence (a determiner, preposition, conjunction, "to", a
possessive, a filler). Templates are split in two groups by a fixed rule: `split="train"` draws from
the training group, `split="held_out"` from the rest, so the held-out figure is on sentence shapes the
model never saw. No word of the turn set's *test* pools (turn_eval.dataset.LEX["test"]) is ever
generated, so `callgate eval-turns` on the test split stays unseen text.
"""

from __future__ import annotations

import re

import numpy as np

from turn_eval.dataset import LEX

W: dict[str, list[str]] = {
    "first": ["Maria", "James", "Linda", "Robert", "Susan", "Michael", "Karen", "David", "John", "Mary", "Jennifer",
              "William", "Elizabeth", "Joseph", "Jessica", "Charles", "Sarah", "Christopher", "Lisa", "Matthew",
              "Ashley", "Anthony", "Michelle", "Mark", "Laura", "Steven", "Rachel", "Paul", "Amy", "Andrew"],
    "last": ["Johnson", "Garcia", "Miller", "Davis", "Lopez", "Wilson", "Smith", "Brown", "Jones", "Williams",
             "Rodriguez", "Hernandez", "Gonzalez", "Lee", "Perez", "White", "Harris", "Lewis", "Walker", "Young",
             "Allen", "King", "Wright", "Scott", "Hill", "Green", "Adams", "Baker", "Nelson", "Carter"],
    "item": ["eggs", "milk", "bread", "coffee", "rice", "apples", "butter", "cheese", "soap", "towels", "chicken",
             "salad", "water", "paper towels", "shampoo", "diapers", "lemons", "carrots", "potatoes", "cereal",
             "a pizza", "two sandwiches", "a large coffee", "fries", "a burger", "soup", "wine", "napkins"],
    "thing": ["bill", "order", "package", "account", "router", "prescription", "invoice", "card", "reservation",
              "booking", "payment", "claim", "password", "internet", "phone", "car", "insurance", "plan",
              "membership", "contract", "receipt", "loan", "mortgage", "application", "warranty", "lease"],
    "service": ["cleaning", "checkup", "haircut", "consultation", "oil change", "table for two", "room",
                "visit", "tour", "test drive", "inspection", "repair", "pickup", "callback", "demo"],
    "place": ["Chicago", "Denver", "Boston", "Austin", "Seattle", "New York", "Houston", "San Diego", "Detroit",
              "Nashville", "Orlando", "Las Vegas", "Philadelphia", "Memphis", "Omaha", "Tampa", "Raleigh"],
    "day": ["Monday", "Tuesday", "Friday", "Sunday", "tomorrow", "today", "next week", "the weekend"],
    "weekday": ["Monday", "Tuesday", "Friday", "Sunday"],
    "part": ["morning", "afternoon", "evening"],
    "month": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December"],
    "ordinal": ["first", "second", "third", "fourth", "fifth", "tenth", "twelfth", "fifteenth", "twentieth",
                "twenty first", "thirtieth", "eighth", "ninth", "sixth"],
    "hour": ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"],
    "count": ["two", "three", "four", "five", "six", "ten", "twenty", "fifty", "a hundred", "a few", "several"],
    "amount": ["twenty dollars", "fifty dollars", "a hundred dollars", "two hundred dollars", "forty nine ninety nine",
               "twelve fifty", "three hundred and ten dollars", "about eighty bucks", "ninety nine cents"],
    "company": ["Blue Shield", "Aetna", "Cigna", "Humana", "Kaiser", "Geico", "State Farm", "Chase", "Verizon",
                "Comcast", "Amazon", "FedEx", "UPS", "Medicare", "Allstate", "Wells Fargo"],
    "street": ["Main", "Oak", "Maple", "Pine", "Cedar", "Elm", "Park", "Lake", "Hill", "Washington", "Lincoln"],
    "road": ["Street", "Avenue", "Road", "Drive", "Lane", "Boulevard", "Court"],
    "problem": ["went up", "never arrived", "stopped working", "was charged twice", "is broken", "is late",
                "doesn't work", "was cancelled", "is too high", "has an error", "won't load", "is missing"],
    "verb": ["cancel", "change", "check on", "update", "pay", "reschedule", "confirm", "fix", "close",
             "upgrade", "dispute", "return", "track", "transfer", "extend", "activate"],
    "past": ["paid", "called", "sent", "returned", "ordered", "emailed", "mailed", "cancelled", "booked"],
    "color": ["blue", "red", "black", "white", "green", "grey", "silver", "large", "small", "cheaper", "first"],
    "person": ["a manager", "someone", "a person", "a nurse", "the doctor", "billing", "a supervisor",
               "customer service", "my agent", "the front desk", "a technician", "your sales team"],
    "relation": ["my husband", "my wife", "my son", "my daughter", "my mother", "my father", "my boss", "a friend"],
    "filler": ["um", "uh", "hmm", "well", "so", "let me see", "let me think", "you know", "okay so", "uh so"],
}
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh"]

# `{slot}` fills from W; `{d3}` three digits read out; `|` a mid-turn pause point; `[a/b/c]` one of.
TEMPLATES: list[str] = [
    # short replies
    "yes", "no", "yeah", "yep", "nope", "sure", "okay", "right", "correct", "exactly", "absolutely", "of course",
    "[yes/yeah] please", "no thanks", "no thank you", "thank you", "thanks so much", "[that's/that is] right",
    "[that's/that is] correct", "that's fine", "that works", "that works for me", "sounds good", "perfect", "great",
    "fine", "alright", "I think so", "I don't think so", "not really", "maybe", "probably", "definitely",
    "never mind", "that's it", "that's all", "that's everything", "nothing else", "go ahead", "I'm not sure",
    "I don't know", "got it", "I see", "goodbye", "bye", "hello", "hi there", "yes it is", "no it isn't",
    "yes I do", "no I don't", "yes I did", "I have", "I will", "of course I can", "yes that's me", "speaking",
    "it's me", "please do", "okay thank you", "okay great", "that would be great", "that's perfect",
    "sure thing", "not yet", "all set", "I'm good", "I'm fine thanks", "that's okay", "no problem",
    "[yes/yeah] that's [right/correct/fine]", "one moment please", "hold on a second", "wait",
    "[uh-huh/uh huh/mm-hmm/mhm/uh-huh yes/mm-hmm okay]", "[oh/oh okay/ah okay/oh I see]",
    "I'm [here/there] [now/already]", "[he's/she's/it's] not [here/there]", "I'm not there [yet/anymore]",
    "can you do it [now/today]", "I need it [today/now/soon/by {weekday}]", "I'll wait", "I already did",
    "I did that already", "not right now", "I'm at [home/work] right now", "it's [done/fixed/working] now",
    "I got it [now/already/yesterday]", "I'll call back later", "I'll try again [later/tomorrow]",
    "[yes/yeah] I [got/have/found] [the/my] {thing}", "I [got/have] the {thing} [right here/with me]",
    "[yes/yeah] [we/they] [did/are/were]", "[it's/that's] [over/there/here] [too/now]",
    # times and dates
    "{hour} is fine", "{hour} o'clock is fine", "{hour} o'clock works", "{hour} works for me",
    "[how about/what about] {hour} [o'clock/thirty/fifteen]", "{hour} thirty please",
    "[at/around/about] {hour} [am/pm/o'clock]", "in the {part} please", "in the {part} if possible",
    "{day} if possible", "next {weekday} if possible", "{weekday} at {hour}", "{weekday} at | {hour} [am/pm]",
    "{day} in the {part}", "{day} {part}", "{day} works", "{day} is [good/better/fine]",
    "[anytime/any time] after {hour}", "before {hour} [please/if you can]", "the {ordinal} of {month}",
    "{month} {ordinal}", "on {month} {ordinal}", "it was on {weekday}", "it was last {weekday}",
    "sometime {day}", "[is/would] {day} [okay/possible/available]", "the earliest you have",
    "as soon as possible", "whenever is easiest", "not {day}, | {day}", "I'm free {day} after | {hour}",
    "my date of birth is | {month} | {ordinal} | nineteen {tens}",
    "I was born on {month} {ordinal}", "it expires in {month}",
    # requests
    "I'd like to | book a {service}", "I would like to | book a {service}", "I want to | {verb} my {thing}",
    "I need to | {verb} my {thing}", "I'd like to | {verb} my {thing}", "I would like to | {verb} the {thing}",
    "can I | {verb} my {thing}", "could you | {verb} my {thing} [please/for me]", "I'm calling to | {verb} my {thing}",
    "I'm calling about | my {thing}", "I'm calling about | the {thing} [I got/you sent me]",
    "I was hoping to | {verb} my {thing}", "I'm trying to | {verb} my {thing}", "I just want to | {verb} my {thing}",
    "I'd like to | speak to {person}", "can I | talk to {person}", "let me talk to {person}",
    "I need | a {service}", "I'd like | a {service} [please/for tomorrow]", "I want | {item}",
    "can I | get {item}", "I'll have | {item}", "could I | order {item}", "I need to | schedule a {service}",
    "I'd like to | make a reservation for {count}", "a table for {count} please", "for {count} people",
    "I want to | cancel", "I need | help with my {thing}", "please | send me a copy", "can you | call me back",
    "could you | email me the {thing}", "I want a refill on | my {thing}", "can you | check my {thing}",
    "can you also | check my {thing}", "please | {verb} it", "just | {verb} it please",
    # names, numbers, addresses
    "my name is | {first} | {last}", "it's {first} {last}", "this is {first}", "{first} {last}",
    "my last name is | {last}", "it's under {first}", "the name is | {last}", "you can call me {first}",
    "my number is | {d3} | {d3} | {d4}", "my phone number is | {d3} | {d3} | {d4}", "it's | {d3} | {d3} | {d4}",
    "the code is | {d4}", "my zip code is | {d5}", "my zip is {d5}", "the account number is | {d4} | {d4}",
    "my member [number/ID] is | {d3} | {d3} | {d3}", "the order number is | {d3} | {d3}",
    "my {thing} number is | {d4} | {d4}", "the last four [are/digits are] | {d4}", "{d3} | {d3} | {d4}",
    "the confirmation number is | {d2} | {d3}", "room {d3}", "extension {d3}", "it's {d4}",
    "I live at | {d3} | {street} {road}", "the address is | {d4} {street} {road}", "{d3} {street} {road}",
    "it's on {street} {road}", "I live in {place}", "I'm in {place}", "I'm calling from {place}",
    "my email is | {first} | at gmail dot com", "it's {first} dot {last} | at yahoo dot com",
    "it is with {company}", "my insurance is {company}", "I have {company}", "I'm with {company}",
    "it's [on/in] [the card/my wallet/the letter/the email]", "my {thing} number is | on the card",
    "it should be on my {thing}", "I don't have it with me", "yes I have it here", "I have it right here",
    "I'm {tens} years old", "there are {count} of us", "about {amount}", "it was {amount}",
    "the total was | {amount}", "I paid | {amount}", "they charged me | {amount}",
    # problems and statements
    "my {thing} {problem}", "the {thing} {problem}", "I think the | {thing} {problem}",
    "I think my {thing} {problem}", "I already {past} it", "I {past} it last {weekday}",
    "I {past} you {day}", "it's been {count} days", "I haven't received my {thing}", "nobody called me back",
    "it doesn't work", "I can't log in", "I can't find my {thing}", "the internet is down",
    "I got charged twice", "I think there's a mistake on | my {thing}", "I was charged for | something I didn't order",
    "I never got | a {thing}", "I lost my {thing}", "my {thing} expired", "I moved to | {place}",
    "I'm not happy with | the {service}", "the {service} was great", "I'm running late", "I'll be there at {hour}",
    "I want to | file a complaint", "I was told | you would call me", "I'm still waiting for | my {thing}",
    "{relation} | will be there", "I'm calling for | {relation}", "it's for {relation}",
    # questions
    "what time do you [close/open]", "what are your hours", "how much [is it/does it cost/is that]",
    "how much is | the {service}", "do you have | {item}", "do you have any {item} left", "is {day} available",
    "when will my {thing} arrive", "where is my {thing}", "why was I charged | {amount}", "how long will it take",
    "who am I speaking with", "is it open on {weekday}", "do you take {company}", "can you tell me | my balance",
    "can you tell me | when the {thing} will be ready", "can you tell me | why my {thing} {problem}",
    "so I got my {thing} yesterday | and I wanted to ask | why it {problem}",
    "quick question | do you [deliver/ship] to {place}", "is there a fee", "what do I need to bring",
    "do I need an appointment", "are you open [today/tomorrow]", "how do I | {verb} my {thing}",
    "what's the status of | my {thing}", "did you get | my {thing}", "could you repeat that",
    "can you say that again", "sorry what was that", "what was the price again", "is that with tax",
    "when is the next available {service}", "is {first} there", "can I speak with {first}",
    # lists
    "I need {item}, | {item} | and {item}", "{item} and {item}", "{item}, | {item}, | and {item}",
    "I'd like {item} and | {item}", "{item}, | {item}, | {item} | and {item}", "just {item} and {item}",
    "{color} and {color}", "the {color} one", "both of them", "the {ordinal} one", "just the one",
    "{weekday} or | {weekday}", "either {weekday} | or {weekday}", "{hour} or {hour}",
    # hesitations
    "{filler} | {hour} is fine", "{filler} | I think | {day}", "{filler} | I'd like to | {verb} my {thing}",
    "I was wondering | {filler} | if you could | {verb} my {thing}", "{filler} | my name is | {first} {last}",
    "I think the | {filler} | the {thing} {problem}", "{filler} | I need to | {verb} the {thing} before {day}",
    "I called on {weekday} and | {filler} | nobody helped me", "{filler} | yes", "{filler} | no | not really",
    "{filler} | let me check | it's {d3} | {d4}", "it's | {filler} | {first}", "{filler} | {day} | in the {part}",
]
TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "twenty five", "sixty two",
        "eighty four", "thirty seven", "forty one", "seventy three"]

# Words after which an English turn is never finished: a prefix stopping here is unfinished.
OPEN_WORDS = {"the", "a", "an", "my", "your", "our", "their", "his", "her", "this", "to", "for", "with", "about",
              "of", "in", "on", "at", "from", "by", "into", "and", "or", "but", "because", "if", "so", "um", "uh",
              "hmm", "than", "like", "some", "any", "every", "which", "who", "where", "when", "why", "what",
              "how", "is", "was", "are", "were", "would", "could", "should", "can", "will", "i'd", "i'm", "it's",
              "i'll", "we're", "you're", "that's", "there's", "have", "has", "had", "been", "be", "do", "does",
              "did", "need", "want", "get", "let", "just", "also", "not"}
# ... except when the prefix is itself a complete reply ("yes it is", "I do", "of course I can")
COMPLETE_ENDINGS = {"it is", "i do", "i did", "i can", "i have", "i will", "that is", "i'm not", "not really"}

BENCH_LINES = [  # scripts/bench_agent_latency.py's turns: never generated, reported separately
    "I would like to book a cleaning.", "Next Tuesday if possible.", "In the morning please.",
    "Nine o'clock is fine.", "Can you also check my insurance?", "It is with Blue Cross.",
    "My member number is on the card.", "Yes, I have it here.", "Okay, thank you.", "That is everything.",
]


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def _test_pool_words() -> tuple[set[str], list[str]]:
    """Words and phrases of the turn set's test pools, which the generator must never produce."""
    t = LEX["test"]
    words = {w.lower() for k in ("first", "last", "item", "thing", "place", "day") for e in t[k] for w in e.split()}
    phrases = [e.lower() for k in ("problem", "verb") for e in t[k]]
    return words, phrases


TEST_WORDS, TEST_PHRASES = _test_pool_words()
BENCH = {_norm(s) for s in BENCH_LINES}


def is_excluded(text: str) -> bool:
    """A test-pool word or phrase, or one of the bench's lines: never a training example."""
    n = _norm(text)
    return bool(set(n.split()) & TEST_WORDS) or any(f" {p} " in f" {n} " for p in TEST_PHRASES) or n in BENCH


def template_split(i: int) -> str:
    """Every fifth template is held out (never trained on)."""
    return "held_out" if i % 5 == 4 else "train"


def _fill(template: str, rng: np.random.Generator) -> list[str]:
    """One filled sentence as its pause-separated segments."""

    def alt(m: re.Match) -> str:
        opts = m.group(1).split("/")
        return opts[int(rng.integers(len(opts)))]

    def slot(m: re.Match) -> str:
        k = m.group(1)
        if k[0] == "d" and k[1:].isdigit():
            return " ".join(DIGITS[int(i)] for i in rng.integers(0, 10 if k != "d2" else 10, int(k[1:])))
        if k == "tens":
            return str(rng.choice(TENS))
        return str(rng.choice(W[k]))

    s = re.sub(r"\[([^\]]+)\]", alt, template)
    s = re.sub(r"\{(\w+)\}", slot, s)
    return [seg.strip() for seg in s.split("|") if seg.strip()]


def _punctuate(text: str, rng: np.random.Generator, question: bool) -> str:
    """Some STTs punctuate and capitalise, some don't: both forms (features ignore it anyway)."""
    if rng.random() < 0.5:
        return text
    return text[0].upper() + text[1:] + ("?" if question else ".")


def sentences(n: int, seed: int, split: str = "train") -> list[tuple[str, int]]:
    """`n` complete sentences from `split`'s templates, each with its unfinished prefixes: (text, 1 | 0)."""
    rng = np.random.default_rng(seed)
    pool = [t for i, t in enumerate(TEMPLATES) if template_split(i) == split]
    out: list[tuple[str, int]] = []
    made = 0
    while made < n:
        t = pool[int(rng.integers(len(pool)))]
        segs = _fill(t, rng)
        full = " ".join(segs)
        if is_excluded(full):
            continue
        made += 1
        q = full.split()[0].lower() in {"what", "how", "when", "where", "why", "who", "do", "does", "is", "are",
                                        "can", "could", "did"}
        out.append((_punctuate(full, rng, q), 1))
        cuts = {" ".join(segs[:i]) for i in range(1, len(segs))}  # the template's pause points
        words = full.split()
        for i in range(1, len(words)):
            pre = words[:i]
            last, last2 = pre[-1].lower().strip(","), " ".join(pre[-2:]).lower().strip(",")
            if last in OPEN_WORDS and last not in COMPLETE_ENDINGS and last2 not in COMPLETE_ENDINGS:
                cuts.add(" ".join(pre))
        for c in cuts:
            if _norm(c) != _norm(full) and _norm(c) not in COMPLETE_ENDINGS:
                out.append((c + ("," if rng.random() < 0.3 else ""), 0))
        if rng.random() < 0.3:  # complete so far, but the caller says "and" / "um": going on
            out.append((full + " " + str(rng.choice(["and", "but", "so", "um", "uh", "because", "or", "and um"])), 0))
    return out
