"""Synthetic UltraFeedback-shaped rows for demos, tests and benchmarks (no external data).

Rows follow the layout of ``ContextualAI/ultrafeedback_clair_32k``::

    prompt    str                          the instruction (the CLAIR ``task``)
    chosen    [{role: user}, {role: assistant}]   a slightly improved answer
    rejected  [{role: user}, {role: assistant}]   the student answer (``student_solution``)
    rational  str                          why ``chosen`` is better (sic, the dataset's spelling)

Instructions are composed from template parts and word lists (coding, math word problems, writing,
advice, factual Q&A, explanations, comparisons, summaries). Lengths follow log-normal targets:
task ~420 chars median (50..2000), student answer ~1,600 chars median (200..5000). Each student
answer carries one to three realistic flaws (a typo from a list of common misspellings, a rambling
filler sentence, a wrong fact / arithmetic slip / wrong complexity claim) which ``chosen`` fixes.

Generation is deterministic for a given ``seed`` and independent of chunking: rows are produced in
blocks of ``_BLOCK`` rows, each block from its own RNG seeded by (seed, block), so
``generate_rows(n, seed, start=k)`` yields exactly the rows ``k..k+n-1`` of the full sequence.
Generation uses only ``random`` (stdlib); writing uses ``pyarrow`` (and ``orjson`` for JSON).
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["DEMO_SAMPLE", "FORMATS", "generate_rows", "write_sample"]

#: the bundled demo input (240 rows, seed 7)
DEMO_SAMPLE = Path(__file__).resolve().parent.parent / "data" / "demo_sample.jsonl"

#: file formats ``write_sample`` understands (by extension)
FORMATS = ("parquet", "jsonl", "json", "csv", "arrow")

_BLOCK = 1024
_CHUNK = 4096

# ---------------------------------------------------------------------------------------------
# word lists and template parts
# ---------------------------------------------------------------------------------------------

_TOPICS = (
    "time management", "photosynthesis", "climate change", "machine learning", "personal finance",
    "remote work", "the French Revolution", "sleep hygiene", "renewable energy", "public speaking",
    "urban gardening", "the water cycle", "cybersecurity", "marathon training", "healthy eating",
    "the stock market", "electric cars", "meditation", "the Roman Empire", "volcanoes",
    "social media marketing", "learning a new language", "home composting", "black holes",
    "cloud computing", "the immune system", "budget travel", "job interviews", "plate tectonics",
    "coffee brewing", "blockchain technology", "ocean acidification", "team leadership",
    "3D printing", "the human brain", "minimalism", "vaccines", "artificial intelligence ethics",
    "bird migration", "recycling", "the Industrial Revolution", "quantum computing", "yoga",
    "small business accounting", "the solar system", "dog training", "urban planning",
    "digital privacy", "the Great Wall of China", "bread baking", "procrastination",
    "wind turbines", "the Renaissance", "open source software", "first aid", "coral reefs",
    "inflation", "video game design", "honeybees", "negotiation skills", "the printing press",
    "interior design", "hydration during exercise", "electric circuits", "podcasting",
    "antibiotic resistance", "wildfire prevention", "the Silk Road", "mobile app development",
    "classical music", "container shipping", "desert ecosystems", "credit scores",
)

_AUDIENCES = (
    "a ten-year-old", "a high school student", "a busy professional", "a complete beginner",
    "my grandmother", "a university student", "a small business owner", "a software engineer",
    "a new employee", "someone who has never heard of it",
)

_TONES = ("friendly", "formal", "humorous", "persuasive", "inspiring", "neutral", "enthusiastic", "concise")

_NAMES = (
    "Maria", "James", "Aisha", "Chen", "Lucas", "Priya", "Olivia", "Mateo", "Fatima", "Noah",
    "Sofia", "Liam", "Yuki", "Amara", "Ethan", "Zara", "Daniel", "Leila", "Tom", "Ines",
)

_ITEMS = ("bicycle", "laptop", "concert ticket", "pair of shoes", "video game", "backpack", "guitar", "phone")

# (correct, misspelt): the typos a student makes; the mock server's reviser fixes the same list.
_TYPOS = (
    (" the ", " teh "), (" because ", " becuase "), (" which ", " wich "), (" until ", " untill "),
    (" receive ", " recieve "), (" separate ", " seperate "), (" definitely ", " definately "),
    (" environment ", " enviroment "), (" necessary ", " neccessary "), (" believe ", " beleive "),
    (" their ", " thier "), (" different ", " diffrent "), (" important ", " importent "),
    (" beginning ", " begining "), (" achieve ", " acheive "), (" successful ", " succesful "),
)

_FILLER_OPENERS = (
    "Basically, ", "To be honest, ", "As I mentioned before, ", "At the end of the day, ",
    "Needless to say, ", "In my opinion, ",
)

_RAMBLES = (
    "{t} is one of those things where there is really a lot to say, and it is very important, so it "
    "is definitely something that you should keep in mind at all times when you think about it.",
    "there are many different aspects of {t} and all of them matter in their own way, which is why it "
    "is important to think about all of the different aspects and not just one of them.",
    "the thing about {t} is that it is a topic that a lot of people talk about a lot, and they have a "
    "lot of different opinions, so it is good to know that there are many opinions.",
    "{t} can be complicated, but it can also be simple, depending on how you look at it and what "
    "you already know about it, so it really depends on the situation and on you.",
)

_GENERIC = (
    "One of the most important aspects of {t} is how it shapes everyday decisions.",
    "Many people underestimate how much {t} can change over a relatively short period of time.",
    "A good starting point is to understand the basic principles behind {t}.",
    "Experts often recommend approaching {t} step by step rather than all at once.",
    "It is worth remembering that {t} affects different people in different ways.",
    "Research over the past few decades has greatly improved our understanding of {t}.",
    "A common misconception is that {t} only matters to specialists, but it concerns almost everyone.",
    "If you want to go deeper, there are excellent books, courses and documentaries about {t}.",
    "In practice, small and consistent habits make the biggest difference when it comes to {t}.",
    "Another key point is that {t} is closely connected to several other fields.",
    "Historically, attitudes towards {t} have shifted considerably as new evidence emerged.",
    "When evaluating information about {t}, it helps to check whether the source is reliable.",
    "The benefits of understanding {t} usually become clear after a few weeks of practice.",
    "There is no single right answer, because the best approach to {t} depends on your goals.",
    "For example, even a simple change can have a noticeable effect on the outcome.",
    "It is also helpful to keep track of your progress so that you can adjust your plan.",
    "Keep in mind that mistakes are a normal part of the learning process.",
    "Finally, talking to people with more experience can save you a lot of time.",
    "This is why organisations increasingly invest in training related to {t}.",
    "To put it simply, {t} rewards patience, curiosity and careful planning.",
    "Some of the challenges include limited time, conflicting advice and a lack of clear data.",
    "On the other hand, the long-term advantages tend to outweigh the initial effort.",
    "A useful rule of thumb is to focus first on the twenty percent that delivers most of the value.",
    "Several studies suggest that people who learn about {t} early make better decisions later.",
    "You do not need expensive tools to get started; a notebook and some curiosity are enough.",
    "As with most things, balance is important, and extremes rarely lead to good results.",
    "Local communities and online forums can be a great source of support and practical tips.",
    "It is a good idea to revisit the basics from time to time, even once you feel confident.",
    "Technology has made it much easier to learn about {t} than it was a generation ago.",
    "A practical exercise is to explain {t} to a friend in your own words.",
    "Costs matter too, and cheaper options are often good enough for most people.",
    "The most successful approaches usually combine theory with hands-on practice.",
    "It is easy to get lost in the details, so keep the big picture in mind.",
    "Many of the best resources on {t} are available for free online.",
    "Asking the right questions is often more valuable than knowing all the answers.",
    "Different countries approach {t} in surprisingly different ways.",
    "There are trade-offs involved, and it is worth weighing them honestly.",
    "A checklist can help you avoid the most common mistakes.",
    "Over time, you will develop an intuition for what works and what does not.",
    "The topic is evolving quickly, so some advice from a few years ago may already be outdated.",
    "Experts do not always agree, which is a sign that the field is still developing.",
    "Starting early gives you more time to learn from your mistakes.",
    "Concrete numbers help: measure where you are today before deciding where to go.",
    "It is also worth considering the environmental and social impact of {t}.",
    "Patience pays off, because meaningful progress rarely happens overnight.",
    "Sharing what you learn with others is a great way to deepen your own understanding.",
    "When in doubt, go back to first principles and reason step by step.",
)

_INTROS = (
    "Great question! ", "Sure! ", "Certainly! ", "Of course. ", "", "", "", "Absolutely! ",
    "Thanks for asking. ", "Happy to help! ",
)

_CLOSINGS = (
    "I hope this helps! Let me know if you have any other questions.",
    "Feel free to ask if you would like more details on any of these points.",
    "Good luck, and enjoy the process!",
    "Let me know if you want me to expand on any part of this answer.",
    "In summary, a thoughtful and consistent approach will give you the best results.",
    "",
)

_ENGAGE = (
    "Try it for a week and you will probably be surprised by how much difference it makes.",
    "A quick concrete example: writing down just three priorities each morning already helps a lot.",
    "The good news is that you do not have to get everything right at once to see real progress.",
    "If you remember only one thing, remember this: small, consistent steps beat occasional big efforts.",
    "It is a bit like learning to ride a bike: awkward at first, then surprisingly natural.",
    "Even experts started with exactly these basics, so you are in good company.",
)

_TASK_EXTRAS = (
    "Please keep the answer under 300 words.", "Use simple language.", "Thanks in advance!",
    "Format the answer as a numbered list.", "Please explain your reasoning.",
    "Include at least one concrete example.", "Avoid technical jargon where possible.",
    "I need this for a presentation tomorrow.", "Be as specific as you can.",
    "Give me the short version first, then the details.", "Please cite any assumptions you make.",
    "This is for a school project.", "I would appreciate a structured answer with headings.",
    "Make it engaging for readers who are new to the subject.",
)

# --- coding ---
_LANGS = ("Python", "JavaScript", "Java", "C++", "Go", "TypeScript")
_CODE_GOALS = (
    ("reverses a string without using built-in helpers", "reverse_string", "O(n)"),
    ("checks whether a number is prime", "is_prime", "O(sqrt(n))"),
    ("merges two sorted lists into one sorted list", "merge_sorted", "O(n + m)"),
    ("counts how often each word appears in a text", "count_words", "O(n)"),
    ("removes duplicates from a list while keeping the original order", "dedupe", "O(n)"),
    ("finds the longest common prefix of a list of strings", "common_prefix", "O(n * k)"),
    ("converts a Roman numeral to an integer", "roman_to_int", "O(n)"),
    ("flattens an arbitrarily nested list", "flatten", "O(n)"),
    ("computes the nth Fibonacci number efficiently", "fibonacci", "O(n)"),
    ("groups a list of records by a given key", "group_by", "O(n)"),
    ("checks whether two strings are anagrams", "is_anagram", "O(n)"),
    ("finds the second largest number in an array", "second_largest", "O(n)"),
    ("implements binary search on a sorted array", "binary_search", "O(log n)"),
    ("validates that brackets in a string are balanced", "is_balanced", "O(n)"),
    ("returns the k most frequent elements of a list", "top_k", "O(n log k)"),
    ("checks whether a string is a palindrome, ignoring punctuation", "is_palindrome", "O(n)"),
    ("computes a moving average over a list of numbers", "moving_average", "O(n)"),
    ("splits a list into chunks of a given size", "chunked", "O(n)"),
)
_WRONG_COMPLEXITY = {"O(n)": "O(n^2)", "O(sqrt(n))": "O(n)", "O(n + m)": "O(n * m)", "O(n * k)": "O(n^2 * k)",
                     "O(log n)": "O(n)", "O(n log k)": "O(n^2)"}
_CODE_ASKS = (
    "Write a {lang} function that {goal}.",
    "How do I write a function in {lang} that {goal}?",
    "Can you help me implement a {lang} function that {goal}?",
    "I need a {lang} function that {goal}. Please explain how it works.",
    "Implement a function in {lang} that {goal} and add a short explanation.",
)
_CODE_EXTRAS = (
    "I'm a beginner, so please keep it simple.", "The input can be very large, so performance matters.",
    "Please include a couple of test cases.", "Add comments explaining each step.",
    "Avoid external libraries.", "What is the time complexity of your solution?",
    "My current version fails when the input is empty.", "Please handle invalid input gracefully.",
)
_CODE_BODIES = {
    "Python": (
        "def {fn}(items):\n    \"\"\"Return the result for the given items.\"\"\"\n    if not items:\n"
        "        return []\n    result = []\n    seen = set()\n    for item in items:\n"
        "        if item in seen:\n            continue\n        seen.add(item)\n        result.append(item)\n"
        "    return result\n\n\nprint({fn}([3, 1, 3, 2, 1]))",
        "def {fn}(data):\n    # handle the trivial case first\n    if len(data) < 2:\n        return data\n"
        "    left, right = 0, len(data) - 1\n    while left < right:\n        data[left], data[right] = data[right], data[left]\n"
        "        left += 1\n        right -= 1\n    return data\n\n\nassert {fn}([1, 2, 3]) == [3, 2, 1]",
        "from collections import Counter\n\n\ndef {fn}(values, k=1):\n    counts = Counter(values)\n"
        "    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))\n    return [v for v, _ in ranked[:k]]\n\n\n"
        "print({fn}(['a', 'b', 'a', 'c'], k=2))",
    ),
    "JavaScript": (
        "function {fn}(items) {\n  if (!Array.isArray(items) || items.length === 0) {\n    return [];\n  }\n"
        "  const seen = new Set();\n  const result = [];\n  for (const item of items) {\n    if (!seen.has(item)) {\n"
        "      seen.add(item);\n      result.push(item);\n    }\n  }\n  return result;\n}\n\nconsole.log({fn}([3, 1, 3, 2]));",
        "const {fn} = (input) => {\n  const counts = new Map();\n  for (const value of input) {\n"
        "    counts.set(value, (counts.get(value) || 0) + 1);\n  }\n  return [...counts.entries()].sort((a, b) => b[1] - a[1]);\n};\n\n"
        "console.log({fn}(['x', 'y', 'x']));",
    ),
    "TypeScript": (
        "export function {fn}<T>(items: T[]): T[] {\n  const result: T[] = [];\n  const seen = new Set<T>();\n"
        "  for (const item of items) {\n    if (seen.has(item)) continue;\n    seen.add(item);\n    result.push(item);\n  }\n"
        "  return result;\n}",
    ),
    "Java": (
        "import java.util.*;\n\npublic class Solution {\n    public static List<Integer> {fn}(List<Integer> items) {\n"
        "        if (items == null || items.isEmpty()) {\n            return new ArrayList<>();\n        }\n"
        "        Set<Integer> seen = new LinkedHashSet<>(items);\n        return new ArrayList<>(seen);\n    }\n\n"
        "    public static void main(String[] args) {\n        System.out.println({fn}(Arrays.asList(3, 1, 3, 2)));\n    }\n}",
    ),
    "C++": (
        "#include <iostream>\n#include <vector>\n#include <unordered_set>\n\nstd::vector<int> {fn}(const std::vector<int>& items) {\n"
        "    std::vector<int> result;\n    std::unordered_set<int> seen;\n    for (int x : items) {\n"
        "        if (seen.insert(x).second) {\n            result.push_back(x);\n        }\n    }\n    return result;\n}\n\n"
        "int main() {\n    for (int x : {fn}({3, 1, 3, 2})) std::cout << x << ' ';\n    return 0;\n}",
    ),
    "Go": (
        "package main\n\nimport \"fmt\"\n\nfunc {fn}(items []int) []int {\n\tseen := make(map[int]bool)\n"
        "\tresult := []int{}\n\tfor _, x := range items {\n\t\tif !seen[x] {\n\t\t\tseen[x] = true\n"
        "\t\t\tresult = append(result, x)\n\t\t}\n\t}\n\treturn result\n}\n\nfunc main() {\n\tfmt.Println({fn}([]int{3, 1, 3, 2}))\n}",
    ),
}
_LANG_TAG = {"Python": "python", "JavaScript": "javascript", "TypeScript": "typescript", "Java": "java",
             "C++": "cpp", "Go": "go"}
_CODE_STEPS = (
    "First, we handle the edge case where the input is empty, so the function never fails on it.",
    "Next, we iterate over the input exactly once and keep track of what we have already seen.",
    "We use a set for the lookups because checking membership in a set is fast on average.",
    "The results are collected in a new list, so the original input is not modified.",
    "Finally, the function returns the result, which makes it easy to test and to reuse.",
    "Variable names are kept short but descriptive so that the code stays readable.",
    "If you need to support other data types, you can make the function generic.",
    "For very large inputs you could also turn this into a generator to save memory.",
)

# --- factual ---
# (question, topic, correct statement, wrong statement)
_FACTS = (
    ("What is the capital of Australia?", "Australia", "The capital of Australia is Canberra",
     "The capital of Australia is Sydney"),
    ("At what temperature does water boil at sea level?", "boiling water",
     "At sea level, water boils at 100 degrees Celsius (212 degrees Fahrenheit)",
     "At sea level, water boils at 90 degrees Celsius (194 degrees Fahrenheit)"),
    ("How many planets are in our solar system?", "the solar system",
     "There are eight planets in our solar system", "There are nine planets in our solar system"),
    ("Who wrote 'Pride and Prejudice'?", "Pride and Prejudice",
     "'Pride and Prejudice' was written by Jane Austen and published in 1813",
     "'Pride and Prejudice' was written by Charlotte Bronte and published in 1813"),
    ("What is the largest ocean on Earth?", "the oceans", "The Pacific Ocean is the largest ocean on Earth",
     "The Atlantic Ocean is the largest ocean on Earth"),
    ("How many bones are in the adult human body?", "the human skeleton",
     "An adult human body has 206 bones", "An adult human body has 212 bones"),
    ("What is the chemical symbol for gold?", "gold", "The chemical symbol for gold is Au",
     "The chemical symbol for gold is Ag"),
    ("When did the Berlin Wall fall?", "the Berlin Wall", "The Berlin Wall fell on 9 November 1989",
     "The Berlin Wall fell on 9 November 1991"),
    ("What is the speed of light in a vacuum?", "the speed of light",
     "Light travels at about 299,792 kilometres per second in a vacuum",
     "Light travels at about 199,792 kilometres per second in a vacuum"),
    ("Which planet is known as the Red Planet?", "Mars", "Mars is known as the Red Planet",
     "Jupiter is known as the Red Planet"),
    ("What gas do plants absorb during photosynthesis?", "photosynthesis",
     "During photosynthesis, plants absorb carbon dioxide and release oxygen",
     "During photosynthesis, plants absorb oxygen and release carbon dioxide"),
    ("Who painted the Mona Lisa?", "the Mona Lisa", "The Mona Lisa was painted by Leonardo da Vinci",
     "The Mona Lisa was painted by Michelangelo"),
    ("What is the longest river in South America?", "the Amazon",
     "The Amazon is the longest river in South America", "The Parana is the longest river in South America"),
    ("How many continents are there?", "the continents", "By the most common convention there are seven continents",
     "By the most common convention there are six continents"),
    ("What is the hardest natural substance?", "diamonds", "Diamond is the hardest naturally occurring substance",
     "Quartz is the hardest naturally occurring substance"),
    ("In which year did humans first land on the Moon?", "the Moon landing",
     "Humans first landed on the Moon in July 1969, during the Apollo 11 mission",
     "Humans first landed on the Moon in July 1971, during the Apollo 11 mission"),
    ("What is the main function of red blood cells?", "red blood cells",
     "Red blood cells carry oxygen from the lungs to the rest of the body",
     "Red blood cells fight infections throughout the body"),
    ("What is the smallest prime number?", "prime numbers", "The smallest prime number is 2",
     "The smallest prime number is 1"),
)
_FACT_OPENERS = ("", "", "Quick question: ", "I was wondering: ", "Trivia time! ", "Settle a debate for me. ",
                 "Hey, ", "For my homework: ", "Simple question. ", "Can you tell me something? ")
_FACT_FOLLOWUPS = (
    "Can you also explain why?", "Please give some background as well.", "Explain it briefly.",
    "I always get this wrong, so please explain it clearly.", "Add an interesting related fact.", "",
)

# --- writing / advice / explain / compare / summarise ---
_FORMS = (
    "a short story", "a poem", "a blog post", "a product description", "a cover letter", "an email to my team",
    "a persuasive essay", "a speech", "a newsletter introduction", "a LinkedIn post", "a short article",
)
_WRITE_ASKS = (
    "Write {form} about {t}.", "Can you write {form} about {t} for {aud}?", "Please draft {form} on {t}.",
    "Compose {form} about {t} in a {tone} tone.", "I need {form} about {t}. Make it {tone}.",
)
_SITUATIONS = (
    "I just started a new job and I feel overwhelmed.", "I want to get better at {t} but I keep giving up.",
    "My team is struggling with deadlines.", "I have a big exam in two weeks.",
    "I'm thinking about changing careers.", "My small business is not growing as fast as I hoped.",
    "I have trouble staying focused when working from home.", "I want to save money for a house.",
    "I moved to a new city and don't know anyone.", "My manager gave me negative feedback.",
)
_ADVICE_DETAILS = (
    "I've read a bit about {t}, but I'm not sure how it applies to me.", "A friend suggested I look into {t}.",
    "I think {t} might be part of the problem.", "I only have about an hour a day to work on this.",
    "I've already tried a few things, but nothing has stuck so far.", "My budget is quite limited.",
    "I'd especially like to understand how {t} fits in.", "I'm in my thirties and work full time.",
    "I'm a student and my schedule changes every week.", "Honestly, I'm starting to lose motivation.",
    "My family is supportive, but they don't really understand the situation.", "",
)
_ADVICE_ASKS = (
    "What should I do?", "Any advice?", "How can I improve?", "What are some practical tips?",
    "Where should I start?", "How would you approach this?",
)
_TIP_HEADS = (
    "Set clear goals", "Start small", "Build a routine", "Track your progress", "Ask for feedback",
    "Take regular breaks", "Learn from others", "Prioritise ruthlessly", "Reflect every week",
    "Remove distractions", "Be kind to yourself", "Plan ahead", "Find an accountability partner",
    "Celebrate small wins", "Focus on the fundamentals",
)
_EXPLAIN_ASKS = (
    "Explain {t} to {aud}.", "Can you explain how {t} works?", "What is {t} and why does it matter?",
    "Give me an overview of {t} suitable for {aud}.", "Help me understand {t} in simple terms.",
)
_COMPARE_ASKS = (
    "What are the main differences between {t} and {u}?", "Compare {t} and {u}.",
    "Which is more important for {aud}: {t} or {u}? Explain.", "How are {t} and {u} related?",
)
_DOCS = ("article", "email", "meeting notes", "blog post", "report excerpt", "news story", "lecture transcript")
_SUMMARY_ASKS = (
    "Summarize the following {doc} in {k} sentences:", "Give me a short summary of this {doc}:",
    "TL;DR this {doc} for me, please:", "Write a {k}-sentence summary of the {doc} below.",
    "Summarize the key points of the following {doc} as bullet points:",
)
_MATH_FOLLOWUPS = ("Show your work.", "Explain each step.", "", "Please explain step by step.", "")

# ---------------------------------------------------------------------------------------------
# row builders; each returns (task, rejected_segments, chosen_segments, issues)
# segments are joined with "\n\n"; chosen differs from rejected only where a flaw was fixed
# ---------------------------------------------------------------------------------------------

_TITLES = ("A Fresh Look", "Why It Matters", "Getting Started", "What You Need to Know", "A Closer Look",
           "Lessons Learned", "The Big Picture", "Myths and Facts")

_CODE_SENT = (
    "It is a good idea to write a few unit tests that cover the normal case and the edge cases.",
    "Edge cases worth testing include an empty input, a single element and very large inputs.",
    "If the input comes from users, validate it before passing it to the function.",
    "You can make the function more reusable by accepting any iterable instead of only lists.",
    "Type hints make the intent of the code clearer and help your editor catch mistakes early.",
    "For production code, consider adding logging so that unexpected inputs are easy to diagnose.",
    "Readable code is usually more valuable than clever code, especially when working in a team.",
    "If performance becomes a concern, profile the code first instead of guessing where the time goes.",
    "A docstring that explains the parameters and the return value makes the function easier to use.",
    "Most languages also offer a built-in helper for this, which is worth knowing about.",
    "Avoid modifying the input in place unless the caller explicitly expects it.",
    "Returning early for the trivial cases keeps the main logic simple and easy to follow.",
    "The same approach works in other languages with only minor syntax changes.",
    "Memory usage grows linearly with the input because we store intermediate results.",
    "Using descriptive variable names makes the code almost self-documenting.",
    "If you need to handle Unicode text, be careful with how characters are compared.",
    "You can run the examples above to check that the output matches your expectations.",
    "A property-based testing library can generate many random inputs to find tricky bugs.",
    "Consider raising a clear error message when the input has the wrong type.",
    "Code reviews are a great way to get feedback on solutions like this one.",
    "Once the function works, it is easy to wrap it in a small command-line tool.",
    "Keeping functions small and focused makes them easier to test and to reuse.",
    "Comments should explain why the code does something, not repeat what it does.",
)

_MATH_SENT = (
    "It is always a good idea to double-check each step of the calculation.",
    "Writing down the units at every step helps to avoid mistakes.",
    "We can verify the result by working backwards from the answer.",
    "Estimating the answer first gives a quick way to spot calculation errors.",
    "Breaking the problem into smaller steps makes it much easier to solve.",
    "The key is to identify which quantities are given and which one we need to find.",
    "Problems like this one appear often in exams, so the method is worth practising.",
    "Drawing a simple diagram can make the relationships between the numbers clearer.",
    "Notice that the order of the operations matters here.",
    "A calculator is useful, but it is important to understand each step as well.",
    "The same method can be applied to similar problems with different numbers.",
    "Reading the question carefully twice prevents many avoidable mistakes.",
    "If the answer seems unreasonably large or small, it is worth checking the arithmetic again.",
)

_TOPIC_WORD = {"@code": "this function", "@math": "this problem"}

Rng = random.Random
_Built = tuple[str, list[str], list[str], list[str], str, int]  # task, rejected, chosen, issues, body pool, cap


def _pick(r: Callable[[], float], seq: tuple[Any, ...]) -> Any:
    return seq[int(r() * len(seq))]


def _build_pool(sentences: tuple[str, ...], topic: str) -> tuple[str, ...]:
    return tuple(s.replace("{t}", topic) for s in sentences)


#: sentence pools: per topic the generic sentences with the topic filled in, plus "@code" and "@math"
_POOLS: dict[str, tuple[str, ...]] = {t: _build_pool(_GENERIC, t) for t in _TOPICS}
for _q, _topic, _a, _b in _FACTS:
    _POOLS.setdefault(_topic, _build_pool(_GENERIC, _topic))
_POOLS["@code"] = _CODE_SENT
_POOLS["@math"] = _MATH_SENT
#: strides coprime with each pool size: a walk (start + j * stride) % size visits distinct sentences


def _walk(r: Callable[[], float], key: str) -> Iterator[str]:
    """An endless walk over one pool that repeats no sentence before the whole pool was used."""
    pool = _POOLS[key]
    n = len(pool)
    i = int(r() * n)
    d = _pick(r, _coprimes(n))
    while True:
        yield pool[i]
        i = (i + d) % n


def _paragraphs(r: Callable[[], float], key: str, budget: int, limit: int = 1 << 30) -> list[str]:
    """Paragraphs of 1-4 sentences from pool ``key`` until ``budget`` chars (never past ``limit``)."""
    out: list[str] = []
    n = 0
    walk = _walk(r, key)
    nxt = walk.__next__
    while n < budget:
        k = 1 + int(r() * 4)
        p = nxt() if k == 1 else " ".join([nxt() for _ in range(k)])
        if n + len(p) > limit:
            p = nxt()
            if n + len(p) > limit:
                break
        out.append(p)
        n += len(p) + 2
    return out


def _lognormal_len(r: Callable[[], float], median: float, sigma: float, lo: int, hi: int) -> int:
    u = (r() + r() + r() + r() - 2.0) * 1.7320508  # ~N(0,1) (Irwin-Hall with 4 uniforms, rescaled)
    return max(lo, min(hi, int(median * math.exp(sigma * u))))


@functools.cache
def _coprimes(n: int) -> tuple[int, ...]:
    return tuple(d for d in range(1, max(n, 2)) if math.gcd(d, n) == 1)


def _extras(r: Callable[[], float], pool: tuple[str, ...], n: int) -> Iterator[str]:
    """``n`` distinct items of ``pool`` (at most all of them), in a random order."""
    size = len(pool)
    i = int(r() * size)
    d = _pick(r, _coprimes(size))
    for _ in range(min(n, size)):
        yield pool[i]
        i = (i + d) % size


def _fill_task(
    r: Callable[[], float], task: str, target: int, key: str | None, extras: tuple[str, ...] = _TASK_EXTRAS
) -> str:
    """Append a context paragraph (from pool ``key``) and/or a few distinct extra requests up to ``target``."""
    if len(task) >= target:
        return task
    parts = [task]
    n = len(task)
    if key is not None and target - n > 350:
        ctx = _paragraphs(r, key, target - n - 120, limit=2000 - n - 40)
        if ctx:
            s = "Some context: " + " ".join(ctx)
            parts.append(s)
            n += len(s) + 1
    for s in _extras(r, extras, 6):
        if n >= target:
            break
        parts.append(s)
        n += len(s) + 1
    return " ".join(parts)


def _coding(r: Callable[[], float], target_task: int) -> _Built:
    lang = _pick(r, _LANGS)
    goal, fn, cx = _pick(r, _CODE_GOALS)
    task = _pick(r, _CODE_ASKS).replace("{lang}", lang).replace("{goal}", goal)
    if target_task - len(task) > 450:
        tried = _pick(r, _CODE_BODIES[lang]).replace("{fn}", "my_attempt")
        task = f"{task} Here is what I tried so far:\n```\n{tried}\n```\n"
    task = _fill_task(r, task, target_task, "@code", _CODE_EXTRAS)
    code = _pick(r, _CODE_BODIES[lang]).replace("{fn}", fn)
    head = f"{_pick(r, _INTROS)}Here is a {lang} function that {goal}:"
    block = f"```{_LANG_TAG[lang]}\n{code}\n```"
    steps = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(_extras(r, _CODE_STEPS, 2 + int(r() * 4))))
    rej = [head, block, "How it works:\n" + steps]
    cho = list(rej)
    issues: list[str] = []
    if r() < 0.6:
        wrong = _WRONG_COMPLEXITY.get(cx, "O(n^3)")
        rej.append(f"The time complexity of this solution is {wrong}, where n is the size of the input.")
        cho.append(f"The time complexity of this solution is {cx}, where n is the size of the input.")
        issues.append(f"it states the time complexity as {wrong} although the algorithm runs in {cx}")
    return task, rej, cho, issues, "@code", 5000


def _math(r: Callable[[], float], target_task: int) -> _Built:
    kind = int(r() * 5)
    name = _pick(r, _NAMES)
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
        task = (f"{name} saves ${w} every week. After {b} weeks, {name} buys a {_pick(r, _ITEMS)} for ${price}. "
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
    followup = _pick(r, _MATH_FOLLOWUPS)
    if followup:
        task = f"{task} {followup}"
    task = _fill_task(r, task, min(target_task, 600), None)
    slip = total + (10 if r() < 0.5 else -1) * (1 + int(r() * 3))
    if slip <= 0:
        slip = total + 10

    def render(t0: int) -> tuple[str, str]:
        ans, ans_s = final(t0)
        body = f"{first[0]}{t0}{first[1]}\n{second.replace('{prev}', str(t0))}{ans}."
        return body, f"Therefore, the answer is {ans_s}."

    good_body, good_final = render(total)
    bad_body, bad_final = render(slip)
    head = f"{_pick(r, _INTROS)}Let's solve this step by step."
    issues = [f"it makes an arithmetic slip in the first step ({slip} instead of {total}), which makes the "
              "final answer wrong"]
    return task, [head, bad_body, bad_final], [head, good_body, good_final], issues, "@math", 1400


def _factual(r: Callable[[], float], target_task: int) -> _Built:
    q, topic, right, wrong = _pick(r, _FACTS)
    fu = _pick(r, _FACT_FOLLOWUPS)
    task = _fill_task(r, f"{_pick(r, _FACT_OPENERS)}{q} {fu}".strip(), target_task, topic)
    head = _pick(r, _INTROS)
    if r() < 0.3:  # some students get the fact right and only ramble or misspell
        return task, [f"{head}{right}."], [f"{head}{right}."], [], topic, 5000
    return task, [f"{head}{wrong}."], [f"{head}{right}."], [f"it states a wrong fact ('{wrong}')"], topic, 5000


def _writing(r: Callable[[], float], target_task: int) -> _Built:
    topic = _pick(r, _TOPICS)
    task = (_pick(r, _WRITE_ASKS).replace("{form}", _pick(r, _FORMS)).replace("{t}", topic)
            .replace("{aud}", _pick(r, _AUDIENCES)).replace("{tone}", _pick(r, _TONES)))
    task = _fill_task(r, task, target_task, topic)
    title = f"**{topic[:1].upper()}{topic[1:]}: {_pick(r, _TITLES)}**"
    return task, [title], [title], [], topic, 5000


def _advice(r: Callable[[], float], target_task: int) -> _Built:
    topic = _pick(r, _TOPICS)
    detail = _pick(r, _ADVICE_DETAILS).replace("{t}", topic)
    task = f"{_pick(r, _SITUATIONS).replace('{t}', topic)} {detail}{' ' if detail else ''}{_pick(r, _ADVICE_ASKS)}"
    task = _fill_task(r, task, target_task, topic)
    walk = _walk(r, topic)
    tips = "\n".join(f"{i + 1}. **{h}**: {next(walk)}" for i, h in enumerate(_extras(r, _TIP_HEADS, 3 + int(r() * 5))))
    head = f"{_pick(r, _INTROS)}It's completely normal to feel this way. Here are some practical tips:"
    return task, [head, tips], [head, tips], [], topic, 5000


def _explain(r: Callable[[], float], target_task: int) -> _Built:
    topic = _pick(r, _TOPICS)
    if r() < 0.5:
        task = _pick(r, _EXPLAIN_ASKS).replace("{t}", topic).replace("{aud}", _pick(r, _AUDIENCES))
    else:
        task = (_pick(r, _COMPARE_ASKS).replace("{t}", topic).replace("{u}", _pick(r, _TOPICS))
                .replace("{aud}", _pick(r, _AUDIENCES)))
    task = _fill_task(r, task, target_task, topic)
    head = f"{_pick(r, _INTROS)}{topic[:1].upper()}{topic[1:]} is a broad subject, so let's break it down."
    return task, [head], [head], [], topic, 5000


def _summary(r: Callable[[], float], target_task: int) -> _Built:
    topic = _pick(r, _TOPICS)
    doc = _pick(r, _DOCS)
    ask = _pick(r, _SUMMARY_ASKS).replace("{doc}", doc).replace("{k}", str(2 + int(r() * 4)))
    passage = _paragraphs(r, topic, max(target_task, 250) - len(ask), limit=2000 - len(ask))
    task = ask + "\n\n" + "\n\n".join(passage)
    head = f"Here is a summary of the {doc}:"
    return task, [head], [head], [], topic, max(400, len(task))


_BUILDERS = (
    (0.20, _coding), (0.14, _math), (0.12, _factual), (0.16, _writing), (0.14, _advice),
    (0.14, _explain), (0.10, _summary),
)
_CUM: list[tuple[float, Callable[[Callable[[], float], int], _Built]]] = []
_acc = 0.0
for _w, _f in _BUILDERS:
    _acc += _w
    _CUM.append((_acc, _f))


def _make_row(rng: Rng) -> tuple[str, str, str, str]:
    r = rng.random
    u = r() * _acc
    builder = _CUM[-1][1]
    for edge, f in _CUM:
        if u < edge:
            builder = f
            break
    target_task = _lognormal_len(r, 470.0, 0.6, 50, 2000)
    target_ans = _lognormal_len(r, 1600.0, 0.45, 200, 5000)
    task, rej, cho, issues, key, cap = builder(r, target_task)
    # grow the answer with body paragraphs up to its target length (same text in both versions)
    n = sum(len(s) + 2 for s in rej)
    body = _paragraphs(r, key, min(target_ans, cap) - 130 - n, limit=4700 - n)
    rej.extend(body)
    cho.extend(body)
    closing = _pick(r, _CLOSINGS)
    if closing:
        rej.append(closing)
        cho.append(closing)
    # flaw: a rambling filler sentence (chosen drops it)
    if r() < 0.5 or not issues:
        at = int(r() * len(rej))
        ramble = _pick(r, _FILLER_OPENERS) + _pick(r, _RAMBLES).replace("{t}", _TOPIC_WORD.get(key, key))
        if not rej[at].startswith(("```", "**")) and "\n" not in rej[at]:
            rej[at] = rej[at] + " " + ramble
            issues.append("one rambling sentence repeats itself without adding information")
    # flaw: a typo (chosen has the correct spelling)
    if r() < 0.7 or not issues:
        seg = int(r() * len(rej))
        text = rej[seg]
        if not text.startswith("```"):
            for good, bad in (_pick(r, _TYPOS), _TYPOS[0]):
                if good in text:
                    rej[seg] = text.replace(good, bad, 1)
                    issues.append(f"it misspells '{good.strip()}' as '{bad.strip()}'")
                    break
    # improvement: chosen is often a little more engaging (one extra sentence in a prose segment)
    if r() < 0.55 or not issues:
        seg = len(cho) - 1 - int(r() * min(3, len(cho)))
        text = cho[seg]
        if text and not text.startswith(("```", "**")) and "\n" not in text and text[-1] in ".!?":
            cho[seg] = text + " " + _pick(r, _ENGAGE)
            issues.append("it would be more engaging with one concrete, encouraging takeaway")
    rejected = "\n\n".join(rej)
    chosen = "\n\n".join(cho)
    if rejected == chosen:  # make sure the pair is contrastive (a small clarity edit)
        chosen = chosen + "\n\nIn short: focus on the essentials and build from there."
        issues.append("it ends without a clear takeaway")
    return task, chosen, rejected, _rational(r, issues)


_RATIONAL_OPEN = (
    "The student's answer is mostly correct and well structured.",
    "The student's answer addresses the task and covers the main points.",
    "Overall, the student's answer is helpful and on topic.",
    "The student's answer is a reasonable attempt that follows the instructions.",
)
_RATIONAL_CLOSE = (
    "The corrected answer fixes these issues while keeping the rest of the answer unchanged.",
    "Fixing these points makes the answer more correct, clearer and more engaging without changing its substance.",
    "Only these parts need to change; everything else can be copied as is.",
)


def _rational(r: Callable[[], float], issues: list[str]) -> str:
    if len(issues) == 1:
        found = f"However, {issues[0]}."
    else:
        found = "However, " + ", ".join(issues[:-1]) + f", and {issues[-1]}."
    return f"{_pick(r, _RATIONAL_OPEN)} {found} {_pick(r, _RATIONAL_CLOSE)}"


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def _raw_rows(n: int, seed: int, start: int) -> Iterator[tuple[str, str, str, str]]:
    if n < 0 or start < 0:
        raise ValueError("n and start must be >= 0")
    end = start + n
    idx = start
    while idx < end:
        block = idx // _BLOCK
        first = block * _BLOCK
        stop = min(first + _BLOCK, end)
        rng = random.Random(f"clair-sample:{seed}:{block}")
        for i in range(first, stop):
            row = _make_row(rng)
            if i >= idx:
                yield row
        idx = stop


def generate_rows(n: int, seed: int = 0, start: int = 0) -> Iterator[dict]:
    """Yield ``n`` rows (``start``-th onwards) in the ``ultrafeedback_clair_32k`` layout."""
    for task, chosen, rejected, rational in _raw_rows(n, seed, start):
        yield {
            "prompt": task,
            "chosen": [{"role": "user", "content": task}, {"role": "assistant", "content": chosen}],
            "rejected": [{"role": "user", "content": task}, {"role": "assistant", "content": rejected}],
            "rational": rational,
        }


def _schema() -> Any:
    import pyarrow as pa

    msg = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))
    return pa.schema([("prompt", pa.string()), ("chosen", msg), ("rejected", msg), ("rational", pa.string())])


def _batches(n: int, seed: int) -> Iterator[Any]:
    """Record batches of at most ``_CHUNK`` rows (never all rows in memory)."""
    import pyarrow as pa

    schema = _schema()
    msg_type = schema.field("chosen").type
    it = _raw_rows(n, seed, 0)
    done = 0
    while done < n:
        m = min(_CHUNK, n - done)
        rows = [next(it) for _ in range(m)]
        tasks = [t[0] for t in rows]
        offsets = pa.array(range(0, 2 * m + 1, 2), pa.int32())
        roles = pa.array(["user", "assistant"] * m, pa.string())
        cols = [pa.array(tasks, pa.string())]
        for k in (1, 2):
            flat: list[str] = [""] * (2 * m)
            flat[0::2] = tasks
            flat[1::2] = [t[k] for t in rows]
            structs = pa.StructArray.from_arrays([pa.array(flat, pa.string()), roles], fields=list(msg_type.value_type))
            cols.append(pa.ListArray.from_arrays(offsets, structs, type=msg_type))
        cols.append(pa.array([t[3] for t in rows], pa.string()))
        yield pa.RecordBatch.from_arrays(cols, schema=schema)
        done += m


def write_sample(path: str | Path, n: int, seed: int = 0, fmt: str | None = None) -> None:
    """Write ``n`` synthetic rows to ``path``; the format comes from the extension unless ``fmt`` is given.

    ``.parquet`` / ``.arrow`` (IPC file) / ``.jsonl`` / ``.json`` (one JSON array) hold the full layout;
    ``.csv`` is flattened to two columns: ``prompt`` and ``solution`` (the student answer).
    Rows are streamed in chunks of ``_CHUNK``, so memory stays flat for millions of rows.
    """
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt == "ipc":
        fmt = "arrow"
    if fmt not in FORMATS:
        raise ValueError(f"unknown sample format {fmt!r} (expected one of {', '.join(FORMATS)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("jsonl", "json"):
        _write_json(path, n, seed, array=fmt == "json")
        return

    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetWriter(str(path), _schema(), compression="zstd", use_dictionary=False) as pw:
            for batch in _batches(n, seed):
                pw.write_batch(batch)
            if n == 0:
                pw.write_table(_schema().empty_table())
    elif fmt == "arrow":
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, _schema()) as w:
            for batch in _batches(n, seed):
                w.write_batch(batch)
    else:  # csv
        import pyarrow.csv as pacsv

        schema = pa.schema([("prompt", pa.string()), ("solution", pa.string())])
        with pacsv.CSVWriter(str(path), schema) as w:
            it = _raw_rows(n, seed, 0)
            done = 0
            while done < n:
                m = min(_CHUNK, n - done)
                rows = [next(it) for _ in range(m)]
                w.write_batch(pa.RecordBatch.from_arrays(
                    [pa.array([t[0] for t in rows], pa.string()), pa.array([t[2] for t in rows], pa.string())],
                    schema=schema))
                done += m


def _write_json(path: Path, n: int, seed: int, *, array: bool) -> None:
    import orjson  # a dependency of the engine; ~25x faster than json for these rows

    with open(path, "wb") as fh:
        if array:
            fh.write(b"[")
        for i, row in enumerate(generate_rows(n, seed)):
            if array:
                fh.write((b"\n" if i == 0 else b",\n") + orjson.dumps(row))
            else:
                fh.write(orjson.dumps(row) + b"\n")
        if array:
            fh.write(b"\n]\n")


if __name__ == "__main__":  # pragma: no cover - developer convenience
    import sys

    write_sample(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
