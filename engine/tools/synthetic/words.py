"""The prose vocabulary of the synthetic rows: topics, people, tones, sentence pools and task wording.

Constant word lists only (no code): the topics and audiences an instruction is about, the generic
sentences an answer is built from, the flaws a student makes (common misspellings, filler openers,
rambling sentences) and the wording of writing, advice, explanation and summary tasks.
"""

TOPICS = (
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

AUDIENCES = (
    "a ten-year-old", "a high school student", "a busy professional", "a complete beginner",
    "my grandmother", "a university student", "a small business owner", "a software engineer",
    "a new employee", "someone who has never heard of it",
)

TONES = ("friendly", "formal", "humorous", "persuasive", "inspiring", "neutral", "enthusiastic", "concise")

NAMES = (
    "Maria", "James", "Aisha", "Chen", "Lucas", "Priya", "Olivia", "Mateo", "Fatima", "Noah",
    "Sofia", "Liam", "Yuki", "Amara", "Ethan", "Zara", "Daniel", "Leila", "Tom", "Ines",
)

ITEMS = ("bicycle", "laptop", "concert ticket", "pair of shoes", "video game", "backpack", "guitar", "phone")

# (correct, misspelt): the typos a student makes; the mock server's reviser fixes the same list.
TYPOS = (
    (" the ", " teh "), (" because ", " becuase "), (" which ", " wich "), (" until ", " untill "),
    (" receive ", " recieve "), (" separate ", " seperate "), (" definitely ", " definately "),
    (" environment ", " enviroment "), (" necessary ", " neccessary "), (" believe ", " beleive "),
    (" their ", " thier "), (" different ", " diffrent "), (" important ", " importent "),
    (" beginning ", " begining "), (" achieve ", " acheive "), (" successful ", " succesful "),
)

FILLER_OPENERS = (
    "Basically, ", "To be honest, ", "As I mentioned before, ", "At the end of the day, ",
    "Needless to say, ", "In my opinion, ",
)

RAMBLES = (
    "{t} is one of those things where there is really a lot to say, and it is very important, so it "
    "is definitely something that you should keep in mind at all times when you think about it.",
    "there are many different aspects of {t} and all of them matter in their own way, which is why it "
    "is important to think about all of the different aspects and not just one of them.",
    "the thing about {t} is that it is a topic that a lot of people talk about a lot, and they have a "
    "lot of different opinions, so it is good to know that there are many opinions.",
    "{t} can be complicated, but it can also be simple, depending on how you look at it and what "
    "you already know about it, so it really depends on the situation and on you.",
)

GENERIC = (
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

INTROS = (
    "Great question! ", "Sure! ", "Certainly! ", "Of course. ", "", "", "", "Absolutely! ",
    "Thanks for asking. ", "Happy to help! ",
)

CLOSINGS = (
    "I hope this helps! Let me know if you have any other questions.",
    "Feel free to ask if you would like more details on any of these points.",
    "Good luck, and enjoy the process!",
    "Let me know if you want me to expand on any part of this answer.",
    "In summary, a thoughtful and consistent approach will give you the best results.",
    "",
)

ENGAGE = (
    "Try it for a week and you will probably be surprised by how much difference it makes.",
    "A quick concrete example: writing down just three priorities each morning already helps a lot.",
    "The good news is that you do not have to get everything right at once to see real progress.",
    "If you remember only one thing, remember this: small, consistent steps beat occasional big efforts.",
    "It is a bit like learning to ride a bike: awkward at first, then surprisingly natural.",
    "Even experts started with exactly these basics, so you are in good company.",
)

TASK_EXTRAS = (
    "Please keep the answer under 300 words.", "Use simple language.", "Thanks in advance!",
    "Format the answer as a numbered list.", "Please explain your reasoning.",
    "Include at least one concrete example.", "Avoid technical jargon where possible.",
    "I need this for a presentation tomorrow.", "Be as specific as you can.",
    "Give me the short version first, then the details.", "Please cite any assumptions you make.",
    "This is for a school project.", "I would appreciate a structured answer with headings.",
    "Make it engaging for readers who are new to the subject.",
)

# --- writing / advice / explain / compare / summarise ---
FORMS = (
    "a short story", "a poem", "a blog post", "a product description", "a cover letter", "an email to my team",
    "a persuasive essay", "a speech", "a newsletter introduction", "a LinkedIn post", "a short article",
)
WRITE_ASKS = (
    "Write {form} about {t}.", "Can you write {form} about {t} for {aud}?", "Please draft {form} on {t}.",
    "Compose {form} about {t} in a {tone} tone.", "I need {form} about {t}. Make it {tone}.",
)
SITUATIONS = (
    "I just started a new job and I feel overwhelmed.", "I want to get better at {t} but I keep giving up.",
    "My team is struggling with deadlines.", "I have a big exam in two weeks.",
    "I'm thinking about changing careers.", "My small business is not growing as fast as I hoped.",
    "I have trouble staying focused when working from home.", "I want to save money for a house.",
    "I moved to a new city and don't know anyone.", "My manager gave me negative feedback.",
)
ADVICE_DETAILS = (
    "I've read a bit about {t}, but I'm not sure how it applies to me.", "A friend suggested I look into {t}.",
    "I think {t} might be part of the problem.", "I only have about an hour a day to work on this.",
    "I've already tried a few things, but nothing has stuck so far.", "My budget is quite limited.",
    "I'd especially like to understand how {t} fits in.", "I'm in my thirties and work full time.",
    "I'm a student and my schedule changes every week.", "Honestly, I'm starting to lose motivation.",
    "My family is supportive, but they don't really understand the situation.", "",
)
ADVICE_ASKS = (
    "What should I do?", "Any advice?", "How can I improve?", "What are some practical tips?",
    "Where should I start?", "How would you approach this?",
)
TIP_HEADS = (
    "Set clear goals", "Start small", "Build a routine", "Track your progress", "Ask for feedback",
    "Take regular breaks", "Learn from others", "Prioritise ruthlessly", "Reflect every week",
    "Remove distractions", "Be kind to yourself", "Plan ahead", "Find an accountability partner",
    "Celebrate small wins", "Focus on the fundamentals",
)
EXPLAIN_ASKS = (
    "Explain {t} to {aud}.", "Can you explain how {t} works?", "What is {t} and why does it matter?",
    "Give me an overview of {t} suitable for {aud}.", "Help me understand {t} in simple terms.",
)
COMPARE_ASKS = (
    "What are the main differences between {t} and {u}?", "Compare {t} and {u}.",
    "Which is more important for {aud}: {t} or {u}? Explain.", "How are {t} and {u} related?",
)
DOCS = ("article", "email", "meeting notes", "blog post", "report excerpt", "news story", "lecture transcript")
SUMMARY_ASKS = (
    "Summarize the following {doc} in {k} sentences:", "Give me a short summary of this {doc}:",
    "TL;DR this {doc} for me, please:", "Write a {k}-sentence summary of the {doc} below.",
    "Summarize the key points of the following {doc} as bullet points:",
)

TITLES = ("A Fresh Look", "Why It Matters", "Getting Started", "What You Need to Know", "A Closer Look",
           "Lessons Learned", "The Big Picture", "Myths and Facts")
