"""What the synthetic calls say: name and business lists, the utterance templates per call type, the
Asterisk Allison prompt scripts, and the template filler.

Why apart: the words are data that change for other reasons than the audio or the call structure.
"""

from __future__ import annotations

import numpy as np

FIRST = (
    "Dana Sam Priya Mike Jennifer Carlos Aisha Tom Olivia Raj Emily David Maria Kevin Sarah Luis Grace "
    "Ahmed Chloe Brian Mei Jose Hannah Nick Fatima Paul Laura Ben Rosa Steve Julia Omar Kate Dylan Nina "
    "Marcus Lily Greg Anna Victor Tina Sean Erin Hector Megan Tyler Diane Ravi Monica Frank Zoe"
).split()
LAST = "Smith Johnson Patel Garcia Nguyen Brown Lee Martinez Chen Walker Kim Lopez Davis Wilson Clark Rivera".split()
BIZ_A = "Riverside Acme Summit Lakeview Bright Oak Pacific Maple Cornerstone Harbor Evergreen Golden Northside Valley Pioneer Metro".split()
BIZ_B = [
    "Dental", "Auto Repair", "Insurance", "Realty", "Law Group", "Plumbing", "Family Medicine", "Veterinary Clinic",
    "Accounting", "Roofing", "Pharmacy", "Hair Studio", "Property Management", "Chiropractic", "Heating and Air",
]  # fmt: skip

HUMAN_SHORT = [
    "Hello?", "Hello?", "Hello?", "Hi.", "Yeah?", "Yes?", "Hello, {first} speaking.", "Hi, this is {first}.",
    "This is {first}.", "Hello, this is {first}.", "Yeah, hello?", "Hey.", "Hello, who's this?", "Yes, hello?",
    "Good morning.", "Hi there.", "{first} here.", "Hello, {first}.", "Uh, hello?", "Speaking.", "Yello?",
    "Hello, good afternoon.", "Hi, who is this?", "Hello? Yes?",
]  # fmt: skip
HUMAN_SECOND = [
    "Hello?",
    "Hello? Anyone there?",
    "Hello?",
    "Hello, can you hear me?",
    "Hello? Who is this?",
    "Hi?",
]
HUMAN_MORE = [
    "Yeah, this is {first}.", "Who's calling?", "Sorry, I was in the other room.", "Can I help you?",
    "Oh hi, yes.", "Sorry, you're breaking up.", "What is this about?", "Yes, this is {first} {last}.",
    "Hang on a second.", "I'm driving right now.", "Okay, go ahead.", "Mm hmm?", "Yes, speaking.",
]  # fmt: skip
HUMAN_BUSINESS = [
    "{biz}, this is {first}, how can I help you?", "Good morning, {biz}, {first} speaking.",
    "Thank you for calling {biz}, this is {first}.", "{biz}, how may I help you?", "{biz}, {first} speaking.",
    "Good afternoon, {biz}, this is {first}, how can I help?", "Hi, {biz}.", "{biz}, can you hold please?",
    "{biz}, this is {first}.", "Hello, {biz}, what can I do for you?", "Thanks for calling {biz}, this is {first}.",
]  # fmt: skip
VM_PERSONAL = [
    "Hi, you've reached {first}. I can't take your call right now, please leave a message after the tone.",
    "Hey, it's {first}. Leave me a message and I'll get back to you.",
    "Hi, this is {first} {last}. Sorry I missed your call. Please leave your name and number and I'll call you back as soon as I can.",
    "You've reached {first}. I'm not available. Leave a message.",
    "Hello, you have reached {first} and {first2}. We can't come to the phone right now. Please leave a message after the beep.",
    "Hey, this is {first}. I'm away from my phone. Text me or leave a message.",
    "Hi, you've reached the voicemail of {first} {last}. Please leave a detailed message and I will return your call.",
    "Hello? Ha, just kidding, this is {first}'s voicemail. Leave a message.",
    "Hi! It's {first}. Can't talk right now, leave a message after the beep. Thanks!",
    "This is {first}. I'm either on the other line or away from my desk. Please leave a message.",
]  # fmt: skip
VM_CARRIER = [
    "The person you are trying to reach is not available. At the tone, please record your message. When you have finished recording, you may hang up.",
    "The number you have dialed, {digits}, is not available. Please leave a message after the tone.",
    "Your call has been forwarded to an automatic voice message system. {first} is not available. At the tone, please record your message.",
    "The subscriber you have called is not available. Please leave a message after the tone.",
    "Please leave your message for {digits} after the tone.",
    "The Google subscriber you have called is not available. Please leave a message after the tone.",
    "The wireless customer you are calling is not available. Please try your call again later.",
    "The mailbox is full and cannot accept any messages at this time. Goodbye.",
]  # fmt: skip
VM_BUSINESS = [
    "Thank you for calling {biz}. Our office hours are Monday through Friday, nine to five. Please leave a message and we will return your call.",
    "You have reached {biz}. We are currently closed. Please leave your name, number and a brief message after the tone.",
    "Hello, and thank you for calling {biz}. All of our staff are currently assisting other customers. Please leave a message.",
    "You've reached {first} {last} at {biz}. I'm either on the phone or away from my desk. Leave a message and I'll call you back.",
    "Thanks for calling {biz}. If this is an emergency, please hang up and dial nine one one. Otherwise leave a message after the beep.",
]  # fmt: skip
IVR = [
    "Thank you for calling {biz}. For sales, press 1. For support, press 2. For billing, press 3. To repeat this menu, press 9.",
    "Welcome to {biz}. Please listen carefully as our menu options have changed. For appointments, press 1.",
    "Thank you for calling {biz}. If you know your party's extension, you may dial it at any time. For the directory, press pound.",
    "Welcome to {biz}. To continue in English, press 1. Para español, oprima el dos.",
    "Hello, you have reached {biz}. Please say or enter your account number, followed by the pound key.",
    "Thank you for calling {biz}. Your call may be recorded for quality purposes. Please hold for the next available representative.",
    "Welcome to the {biz} automated attendant. Please enter the extension of the person you are trying to reach.",
]  # fmt: skip
INTERCEPT = [
    "We're sorry, the number you have dialed is not in service. Please check the number and dial again.",
    "The number you have reached, {digits}, has been disconnected.",
    "We're sorry, your call cannot be completed as dialed. Please check the number and dial again.",
    "All circuits are busy now. Please try your call again later.",
    "The number you have dialed has been changed, disconnected, or is no longer in service.",
    "This number is not reachable at the moment. Please try again later.",
]  # fmt: skip
ALLISON_VM = [
    ["vm-theperson", "DIGITS", "vm-isunavail", "vm-intro"],
    ["vm-theperson", "DIGITS", "vm-isonphone", "vm-intro"],
    ["vm-nobodyavail", "vm-intro"],
    ["vm-intro"],
    ["vm-theperson", "DIGITS", "vm-isunavail"],
]
ALLISON_INTERCEPT = [
    ["ss-noservice"],
    ["number-not-answering"],
    ["check-number-dial-again"],
    ["cannot-complete-as-dialed", "please-try-call-later"],
    ["all-circuits-busy-now", "please-try-call-later"],
    ["ss-noservice"],
]
ALLISON_IVR = [
    ["dir-intro"],
    ["queue-periodic-announce"],
    ["pls-hold-while-try"],
    ["dir-welcome", "dir-intro-fn"],
    ["queue-thankyou", "queue-youarenext"],
]


def fill(template: str, rng: np.random.Generator) -> str:
    """Fill a text template with random names, businesses and digits."""
    biz = f"{BIZ_A[int(rng.integers(len(BIZ_A)))]} {BIZ_B[int(rng.integers(len(BIZ_B)))]}"
    digits = " ".join(str(int(d)) for d in rng.integers(0, 10, 7))
    return template.format(
        first=FIRST[int(rng.integers(len(FIRST)))],
        first2=FIRST[int(rng.integers(len(FIRST)))],
        last=LAST[int(rng.integers(len(LAST)))],
        biz=biz,
        digits=digits,
    )


def choice(rng: np.random.Generator, items: list) -> object:
    return items[int(rng.integers(len(items)))]
