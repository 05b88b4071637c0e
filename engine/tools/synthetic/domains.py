"""The checkable content of the synthetic rows: code, math wording and facts, each with its wrong version.

Constant word lists only (no code): functions in six languages with their true time complexity and
the wrong one a student claims, the sentences of coding and math answers, and factual questions
with a correct and a wrong statement. ``chosen`` states the right one, ``rejected`` the wrong one.
"""

# --- coding ---
LANGS = ("Python", "JavaScript", "Java", "C++", "Go", "TypeScript")
CODE_GOALS = (
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
WRONG_COMPLEXITY = {"O(n)": "O(n^2)", "O(sqrt(n))": "O(n)", "O(n + m)": "O(n * m)", "O(n * k)": "O(n^2 * k)",
                     "O(log n)": "O(n)", "O(n log k)": "O(n^2)"}
CODE_ASKS = (
    "Write a {lang} function that {goal}.",
    "How do I write a function in {lang} that {goal}?",
    "Can you help me implement a {lang} function that {goal}?",
    "I need a {lang} function that {goal}. Please explain how it works.",
    "Implement a function in {lang} that {goal} and add a short explanation.",
)
CODE_EXTRAS = (
    "I'm a beginner, so please keep it simple.", "The input can be very large, so performance matters.",
    "Please include a couple of test cases.", "Add comments explaining each step.",
    "Avoid external libraries.", "What is the time complexity of your solution?",
    "My current version fails when the input is empty.", "Please handle invalid input gracefully.",
)
CODE_BODIES = {
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
LANG_TAG = {"Python": "python", "JavaScript": "javascript", "TypeScript": "typescript", "Java": "java",
             "C++": "cpp", "Go": "go"}
CODE_STEPS = (
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
FACTS = (
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
FACT_OPENERS = ("", "", "Quick question: ", "I was wondering: ", "Trivia time! ", "Settle a debate for me. ",
                 "Hey, ", "For my homework: ", "Simple question. ", "Can you tell me something? ")
FACT_FOLLOWUPS = (
    "Can you also explain why?", "Please give some background as well.", "Explain it briefly.",
    "I always get this wrong, so please explain it clearly.", "Add an interesting related fact.", "",
)

# --- math ---
MATH_FOLLOWUPS = ("Show your work.", "Explain each step.", "", "Please explain step by step.", "")


# --- the sentences a coding or math answer body is built from ---
CODE_SENT = (
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

MATH_SENT = (
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
