"""One builder per kind of row (coding, math, factual, writing, advice, explain, summary) and the draw between them.

A builder turns a uniform source ``r`` and a target task length into ``(task, rejected_segments,
chosen_segments, issues, body pool, answer cap)``; segments are joined with blank lines and ``chosen``
differs from ``rejected`` only where a flaw was fixed. ``choose_builder`` maps a uniform draw to a
builder by the kinds' weights. Pure.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.tools.synthetic.domains import (
    CODE_ASKS,
    CODE_BODIES,
    CODE_EXTRAS,
    CODE_GOALS,
    CODE_STEPS,
    FACT_FOLLOWUPS,
    FACT_OPENERS,
    FACTS,
    LANG_TAG,
    LANGS,
    MATH_FOLLOWUPS,
    WRONG_COMPLEXITY,
)
from engine.tools.synthetic.text import distinct, fill_task, paragraphs, pick, walk
from engine.tools.synthetic.words import (
    ADVICE_ASKS,
    ADVICE_DETAILS,
    AUDIENCES,
    COMPARE_ASKS,
    DOCS,
    EXPLAIN_ASKS,
    FORMS,
    INTROS,
    ITEMS,
    NAMES,
    SITUATIONS,
    SUMMARY_ASKS,
    TIP_HEADS,
    TITLES,
    TONES,
    TOPICS,
    WRITE_ASKS,
)

__all__ = ["Built", "choose_builder"]

Built = tuple[str, list[str], list[str], list[str], str, int]  # task, rejected, chosen, issues, body pool, cap


def _coding(r: Callable[[], float], target_task: int) -> Built:
    lang = pick(r, LANGS)
    goal, fn, cx = pick(r, CODE_GOALS)
    task = pick(r, CODE_ASKS).replace("{lang}", lang).replace("{goal}", goal)
    if target_task - len(task) > 450:
        tried = pick(r, CODE_BODIES[lang]).replace("{fn}", "my_attempt")
        task = f"{task} Here is what I tried so far:\n```\n{tried}\n```\n"
    task = fill_task(r, task, target_task, "@code", CODE_EXTRAS)
    code = pick(r, CODE_BODIES[lang]).replace("{fn}", fn)
    head = f"{pick(r, INTROS)}Here is a {lang} function that {goal}:"
    block = f"```{LANG_TAG[lang]}\n{code}\n```"
    steps = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(distinct(r, CODE_STEPS, 2 + int(r() * 4))))
    rej = [head, block, "How it works:\n" + steps]
    cho = list(rej)
    issues: list[str] = []
    if r() < 0.6:
        wrong = WRONG_COMPLEXITY.get(cx, "O(n^3)")
        rej.append(f"The time complexity of this solution is {wrong}, where n is the size of the input.")
        cho.append(f"The time complexity of this solution is {cx}, where n is the size of the input.")
        issues.append(f"it states the time complexity as {wrong} although the algorithm runs in {cx}")
    return task, rej, cho, issues, "@code", 5000


def _math(r: Callable[[], float], target_task: int) -> Built:
    kind = int(r() * 5)
    name = pick(r, NAMES)
    a, b, c = 2 + int(r() * 23), 3 + int(r() * 30), 2 + int(r() * 9)
    if kind == 0:
        task = (f"A bakery bakes {a} trays of {b} muffins every morning and packs them in boxes of {c}. "
                f"How many full boxes can it fill each morning?")
        total = a * b
        first = (f"First, find the total number of muffins: {a} x {b} = ", " muffins.")
        second = f"Next, divide by the box size: {{prev}} / {c} = "
        final: Callable[[int], tuple[int, str]] = lambda t: (t // c, f"{t // c} full boxes")  # noqa: E731
    elif kind == 1:
        w, price = 10 * (1 + int(r() * 9)), c * 25
        task = (f"{name} saves ${w} every week. After {b} weeks, {name} buys a {pick(r, ITEMS)} for ${price}. "
                f"How much money is left?")
        total = w * b
        first = (f"First, compute the savings: ${w} x {b} = $", ".")
        second = f"Then subtract the purchase: ${{prev}} - ${price} = $"
        final = lambda t: (t - price, f"${t - price} left")  # noqa: E731
    elif kind == 2:
        v1, v2, h2 = 40 + 5 * int(r() * 16), 30 + 5 * int(r() * 12), a % 5 + 1
        task = (f"A train travels at {v1} km/h for {c} hours and then at {v2} km/h for {h2} hours. "
                f"What is the total distance travelled?")
        total = v1 * c
        first = (f"The first part of the trip covers {v1} x {c} = ", " km.")
        second = f"The second part covers {v2} x {h2} = {v2 * h2} km, so the total is {{prev}} + {v2 * h2} = "
        final = lambda t: (t + v2 * h2, f"{t + v2 * h2} km")  # noqa: E731
    elif kind == 3:
        task = (f"A rectangular garden is {b} metres long and {a} metres wide. Fencing costs ${c} per metre. "
                f"How much does it cost to fence the whole garden?")
        total = 2 * (a + b)
        first = (f"The perimeter is 2 x ({b} + {a}) = ", " metres.")
        second = f"The cost is {{prev}} x ${c} = $"
        final = lambda t: (t * c, f"${t * c}")  # noqa: E731
    else:
        h, rate = 4 + int(r() * 9), b * 10
        task = (f"A factory produces {rate} widgets per hour and runs {h} hours a day. "
                f"How many widgets does it produce in {c} days?")
        total = rate * h
        first = (f"Widgets per day: {rate} x {h} = ", ".")
        second = f"Widgets in {c} days: {{prev}} x {c} = "
        final = lambda t: (t * c, f"{t * c} widgets")  # noqa: E731
    followup = pick(r, MATH_FOLLOWUPS)
    if followup:
        task = f"{task} {followup}"
    task = fill_task(r, task, min(target_task, 600), None)
    slip = total + (10 if r() < 0.5 else -1) * (1 + int(r() * 3))
    if slip <= 0:
        slip = total + 10

    def render(t0: int) -> tuple[str, str]:
        ans, ans_s = final(t0)
        body = f"{first[0]}{t0}{first[1]}\n{second.replace('{prev}', str(t0))}{ans}."
        return body, f"Therefore, the answer is {ans_s}."

    good_body, good_final = render(total)
    bad_body, bad_final = render(slip)
    head = f"{pick(r, INTROS)}Let's solve this step by step."
    issues = [f"it makes an arithmetic slip in the first step ({slip} instead of {total}), which makes the "
              "final answer wrong"]
    return task, [head, bad_body, bad_final], [head, good_body, good_final], issues, "@math", 1400


def _factual(r: Callable[[], float], target_task: int) -> Built:
    q, topic, right, wrong = pick(r, FACTS)
    fu = pick(r, FACT_FOLLOWUPS)
    task = fill_task(r, f"{pick(r, FACT_OPENERS)}{q} {fu}".strip(), target_task, topic)
    head = pick(r, INTROS)
    if r() < 0.3:  # some students get the fact right and only ramble or misspell
        return task, [f"{head}{right}."], [f"{head}{right}."], [], topic, 5000
    return task, [f"{head}{wrong}."], [f"{head}{right}."], [f"it states a wrong fact ('{wrong}')"], topic, 5000


def _writing(r: Callable[[], float], target_task: int) -> Built:
    topic = pick(r, TOPICS)
    task = (pick(r, WRITE_ASKS).replace("{form}", pick(r, FORMS)).replace("{t}", topic)
            .replace("{aud}", pick(r, AUDIENCES)).replace("{tone}", pick(r, TONES)))
    task = fill_task(r, task, target_task, topic)
    title = f"**{topic[:1].upper()}{topic[1:]}: {pick(r, TITLES)}**"
    return task, [title], [title], [], topic, 5000


def _advice(r: Callable[[], float], target_task: int) -> Built:
    topic = pick(r, TOPICS)
    detail = pick(r, ADVICE_DETAILS).replace("{t}", topic)
    task = f"{pick(r, SITUATIONS).replace('{t}', topic)} {detail}{' ' if detail else ''}{pick(r, ADVICE_ASKS)}"
    task = fill_task(r, task, target_task, topic)
    sentences = walk(r, topic)
    tips = "\n".join(f"{i + 1}. **{h}**: {next(sentences)}" for i, h in enumerate(distinct(r, TIP_HEADS, 3 + int(r() * 5))))
    head = f"{pick(r, INTROS)}It's completely normal to feel this way. Here are some practical tips:"
    return task, [head, tips], [head, tips], [], topic, 5000


def _explain(r: Callable[[], float], target_task: int) -> Built:
    topic = pick(r, TOPICS)
    if r() < 0.5:
        task = pick(r, EXPLAIN_ASKS).replace("{t}", topic).replace("{aud}", pick(r, AUDIENCES))
    else:
        task = (pick(r, COMPARE_ASKS).replace("{t}", topic).replace("{u}", pick(r, TOPICS))
                .replace("{aud}", pick(r, AUDIENCES)))
    task = fill_task(r, task, target_task, topic)
    head = f"{pick(r, INTROS)}{topic[:1].upper()}{topic[1:]} is a broad subject, so let's break it down."
    return task, [head], [head], [], topic, 5000


def _summary(r: Callable[[], float], target_task: int) -> Built:
    topic = pick(r, TOPICS)
    doc = pick(r, DOCS)
    ask = pick(r, SUMMARY_ASKS).replace("{doc}", doc).replace("{k}", str(2 + int(r() * 4)))
    passage = paragraphs(r, topic, max(target_task, 250) - len(ask), limit=2000 - len(ask))
    task = ask + "\n\n" + "\n\n".join(passage)
    head = f"Here is a summary of the {doc}:"
    return task, [head], [head], [], topic, max(400, len(task))


_BUILDERS = (
    (0.20, _coding), (0.14, _math), (0.12, _factual), (0.16, _writing), (0.14, _advice),
    (0.14, _explain), (0.10, _summary),
)
_CUM: list[tuple[float, Callable[[Callable[[], float], int], Built]]] = []
_acc = 0.0
for _w, _f in _BUILDERS:
    _acc += _w
    _CUM.append((_acc, _f))


def choose_builder(x: float) -> Callable[[Callable[[], float], int], Built]:
    """The builder for a uniform draw ``x`` in [0, 1) (each kind with its weight)."""
    u = x * _acc
    builder = _CUM[-1][1]
    for edge, f in _CUM:
        if u < edge:
            builder = f
            break
    return builder
