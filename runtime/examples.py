"""The Berlin rerank example used by the demo, the README, the server tests and the benchmarks."""

BERLIN_QUERY = "What is the population of Berlin?"
BERLIN_DOCUMENTS = [
    "Berlin had a population of 3,782,202 registered inhabitants at the end of 2023.",
    "Berlin ist mit rund 3,8 Millionen Einwohnern die bevölkerungsreichste Stadt Deutschlands.",
    "Berlin compte environ 3,8 millions d'habitants, ce qui en fait la plus grande ville d'Allemagne.",
    "Berlin is known for its museums, its nightlife and the remains of the Berlin Wall.",
    "柏林是德国首都，人口约三百八十万。",
    "The population of Paris is about 2.1 million, and 12 million live in its metropolitan area.",
    "Berlin's economy is driven by services, start-ups, tourism and the creative industries.",
    "Cats sleep between twelve and sixteen hours a day.",
]
