"""Make data/sample_ner and data/sample_qa: bundled, offline NER and extractive-QA samples (synthetic).

sample_ner: news-like sentences, one JSON object a line {"tokens": [...], "ner_tags": [...]}, IOB2 tags
over PER, ORG, LOC and MISC. Multi-word entities, cities inside organisation names ("Dynamo Riga",
"University of Oslo"), adjacent entities ("Swede Lars Nilsson", "the Norwind Systems Lisbon plant"),
words that are a name or a place depending on context ("Michael Jordan" / "in Jordan"), punctuation
as separate tokens, and ~3% run-on sentences of 60-120 words that need several windows. Made for a
causal model: an entity's type is given by the words to its left ("in X", "the company X", "Mr. X",
"said spokeswoman X") or, where nothing precedes it, by the name itself. Validation and test use
some names never seen in training, always where the left context tells their type.

sample_qa: flattened SQuAD JSON lines {"id", "title", "question", "context", "answers": {"text",
"answer_start"}}: short biographies, company and city profiles (3-6 sentences) with distractors (two
people, several cities and years in one context), and ~5% long contexts padded with 250-400 words of
other facts, the answer anywhere. Every answer is an exact span. Validation/test contexts differ from
the training ones and some of their questions have several reference answers ("1975", "in 1975").

Deterministic from --seed: the same files, byte for byte, on every run.

    python scripts/make_sample_ner_qa.py     # writes data/sample_ner/*.jsonl and data/sample_qa/*.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation", "test")
NER_SIZES = {"train": 2000, "validation": 300, "test": 300}
QA_SIZES = {"train": 2500, "validation": 300, "test": 300}

# ---------------------------------------------------------------------------------------------------
# Word lists (shared by both tasks)
# ---------------------------------------------------------------------------------------------------
FEMALE = ["Anna", "Maria", "Elena", "Nina", "Sara", "Marta", "Leila", "Clara", "Greta", "Hannah", "Karin",
          "Nadia", "Rosa", "Ulla", "Wanda", "Zofia", "Carmen", "Emma", "Ines", "Julia", "Laura", "Olga",
          "Priya", "Selin", "Vera", "Aiko", "Amina", "Beatriz", "Dana", "Eva", "Freya", "Ingrid", "Lucia",
          "Mei", "Noor", "Paula", "Petra", "Sonja", "Tamara", "Yara", "Astrid", "Helena", "Irina", "Lotte"]
MALE = ["Tomas", "Lukas", "Paul", "Peter", "Ivan", "Omar", "Hugo", "David", "Erik", "Jonas", "Lars", "Mateo",
        "Oskar", "Samuel", "Tariq", "Viktor", "Yusuf", "Amir", "Bruno", "Diego", "Felix", "Kenji", "Mikael",
        "Rafael", "Theo", "Wei", "Anton", "Carlos", "Emil", "Goran", "Henrik", "Jakob", "Karim", "Leon",
        "Marco", "Nikolai", "Pablo", "Ravi", "Stefan", "Tobias", "Arjun", "Michael", "Simon", "Adrian"]
# First names that are also places: only where the left context says "person" (after "spokeswoman").
AMBIGUOUS_FIRST = {"Florence": "f", "Sydney": "f", "Victoria": "f", "Georgia": "f", "Charlotte": "f",
                   "Adelaide": "f", "Austin": "m", "Orlando": "m", "Jordan": "m", "Lincoln": "m"}
SURNAMES = ["Keller", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov", "Quinn", "Rossi", "Santos",
            "Tanaka", "Varga", "Weber", "Yilmaz", "Zhang", "Almeida", "Brandt", "Costa", "Dubois", "Eriksen",
            "Fischer", "Garcia", "Halvorsen", "Ivanova", "Jansen", "Kowalski", "Larsen", "Meyer", "Nilsson",
            "Olsen", "Peralta", "Richter", "Schmidt", "Torres", "Vogel", "Wagner", "Bauer", "Haas", "Mendes",
            "Ferrari", "Kaplan", "Morales", "Navarro", "Otieno", "Mensah", "Sato", "Park", "Nakamura",
            "Lund", "Berg", "Strand", "Hoffmann", "Marin", "Popescu", "Horvat", "Dimitrov", "Kova", "Reyes",
            "Silva", "Andersson", "Lambert", "Fontaine", "Novotny", "Sandoval", "Mwangi", "Adeyemi", "Chen"]
# Surnames that are also places: after a first name they are a person ("Michael Jordan").
AMBIGUOUS_SUR = ["Jordan", "Lincoln", "Chester", "Preston", "Hamilton", "Warwick", "Kingston", "Wellington",
                 "Lancaster", "Washington", "Austin", "Florence"]
PARTICLES = ["van", "de", "da", "von", "van der"]

CITIES = ["Lisbon", "Oslo", "Berlin", "Madrid", "Vienna", "Prague", "Warsaw", "Helsinki", "Dublin", "Athens",
          "Cairo", "Nairobi", "Lagos", "Lima", "Quito", "Bogota", "Santiago", "Toronto", "Montreal", "Chicago",
          "Boston", "Denver", "Seattle", "Osaka", "Kyoto", "Seoul", "Manila", "Hanoi", "Mumbai", "Dhaka",
          "Ankara", "Izmir", "Porto", "Seville", "Valencia", "Lyon", "Marseille", "Hamburg", "Munich",
          "Cologne", "Zurich", "Geneva", "Bergen", "Gothenburg", "Malmo", "Tallinn", "Riga", "Vilnius",
          "Krakow", "Budapest", "Bucharest", "Sofia", "Belgrade", "Zagreb", "Tunis", "Accra", "Dakar",
          "Perth", "Auckland", "Calgary", "Turin", "Naples", "Antwerp", "Rotterdam", "Aarhus", "Tampere"]
MULTI_CITIES = ["New York", "Rio de Janeiro", "San Diego", "Buenos Aires", "Cape Town", "Hong Kong",
                "Tel Aviv", "Kuala Lumpur", "Sao Paulo", "Los Angeles", "Mexico City", "Saint Petersburg",
                "Las Palmas", "Santa Cruz", "Abu Dhabi", "Addis Ababa", "New Delhi", "La Paz", "Port Louis"]
AMBIGUOUS_PLACES = ["Jordan", "Lincoln", "Chester", "Preston", "Hamilton", "Warwick", "Kingston", "Wellington",
                    "Lancaster", "Washington", "Florence", "Sydney", "Victoria", "Georgia", "Charlotte",
                    "Adelaide", "Austin", "Orlando"]
COUNTRIES = ["Portugal", "Norway", "Germany", "Spain", "Austria", "Kenya", "Nigeria", "Peru", "Chile",
             "Brazil", "Canada", "Japan", "Vietnam", "India", "Turkey", "Egypt", "Poland", "Hungary",
             "Finland", "Ireland", "Greece", "Morocco", "Ghana", "Argentina", "Mexico", "Sweden", "Denmark",
             "Senegal", "Romania", "Croatia", "Estonia", "Latvia", "Tunisia", "Ecuador", "Colombia",
             "South Africa", "New Zealand", "Sri Lanka", "Costa Rica", "South Korea", "Jordan", "Georgia"]
ORG_HEADS = ["Norwind", "Atlas", "Solvik", "Tidewater", "Brightline", "Helix", "Quorum", "Meridian", "Vantor",
             "Kestrel", "Polaris", "Arcadia", "Bluepeak", "Granite", "Ironwood", "Lumen", "Nordhaven",
             "Pinecrest", "Redstone", "Silverline", "Tessaro", "Veltrix", "Zenith", "Cobalt", "Halcyon",
             "Marlow", "Ostara", "Pelican", "Quantix", "Sablon", "Terrano", "Umbrella", "Vireo", "Westfield",
             "Alcora", "Brevik", "Corvane", "Dalmar", "Everon", "Fjordline", "Glenmark", "Harbrook", "Istra",
             "Juniper", "Korvus", "Larkspur", "Mistral", "Nexora", "Orbis", "Primavera", "Rovena", "Stellan",
             "Trilon", "Valdor", "Wyvern", "Yarrow", "Zephyr", "Ambrel", "Boreal", "Calloway"]
ORG_TAILS = ["Systems", "Bank", "Motors", "Mining", "Logistics", "Telecom", "Airlines", "Labs", "Networks",
             "Pharma", "Media", "Insurance", "Shipping", "Energy", "Foods", "Capital", "Group", "Holdings",
             "Partners", "Software", "Steel", "Textiles", "Robotics", "Industries", "Securities", "Analytics"]
CLUB_PREFIXES = ["Dynamo", "Sporting", "Racing", "Atletico", "Olympique", "Union", "Spartak", "Slavia",
                 "Rapid", "Real"]
NATIONALITIES = ["Portuguese", "Norwegian", "German", "Spanish", "Kenyan", "Brazilian", "Japanese", "Canadian",
                 "Polish", "Greek", "Swedish", "Danish", "Dutch", "French", "Italian", "Chilean", "Mexican",
                 "Irish", "Turkish", "Egyptian", "Nigerian", "Peruvian", "Austrian", "Finnish", "Hungarian"]
DEMONYMS = ["Swede", "Dane", "Briton", "Kenyan", "German", "Norwegian", "Brazilian", "Spaniard", "Frenchman",
            "Italian", "Pole", "Finn", "Dutchman", "Mexican", "Chilean", "Ethiopian", "Australian"]
EVENTS = ["World Cup", "Olympic Games", "Tour de France", "Champions League", "Winter Olympics", "Davis Cup",
          "Europa League", "Asian Games", "Africa Cup of Nations", "Copa America", "Nobel Prize",
          "Venice Film Festival", "Paris Air Show", "Frankfurt Book Fair"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
PRODUCTS = ["solar panels", "electric bicycles", "frozen pizza", "hearing aids", "fishing boats",
            "wind turbines", "office chairs", "coffee machines", "river ferries", "board games",
            "running shoes", "medical scanners", "drone cameras", "garden tools", "school buses",
            "smart watches", "paper cups", "train seats", "water pumps", "ski boots", "cheap phones",
            "baby food", "steel pipes", "glass bottles", "video games", "heat pumps", "sailing yachts",
            "printer ink", "dog food", "cargo drones"]
FIELDS = ["chemistry", "law", "architecture", "economics", "marine biology", "medicine", "music",
          "civil engineering", "history", "physics", "philosophy", "computer science", "geology",
          "journalism", "mathematics", "agriculture", "linguistics", "art history"]
PROFESSIONS = ["architect", "chemist", "pilot", "novelist", "engineer", "violinist", "surgeon", "journalist",
               "teacher", "lawyer", "photographer", "banker", "nurse", "chef", "painter", "geologist",
               "diplomat", "carpenter"]
RIVERS = ["Almora", "Veska", "Tarn", "Lume", "Odra", "Selva", "Marn", "Kirra", "Doven", "Ebra", "Ranta",
          "Sora", "Talva", "Neris", "Ulla", "Vardar", "Istra", "Molde"]
LANDMARKS = ["Old Bridge", "Clock Tower", "Grand Library", "Harbour Lighthouse", "Royal Opera House",
             "Stone Gate", "Glass Pavilion", "North Cathedral", "Silver Market Hall", "Iron Bridge",
             "Botanical Garden", "Marble Fountain", "Sea Fortress", "Town Hall", "Salt Museum", "Red Mill"]
RELATIONS = {"f": ["sister", "cousin", "colleague", "friend", "business partner"],
             "m": ["brother", "cousin", "colleague", "friend", "business partner"]}
ADJECTIVES = ["small", "young", "family-owned", "fast-growing", "listed", "private", "mid-sized", "century-old"]


def _split_pool(rng: random.Random, names: list[str], share: float) -> tuple[list[str], list[str]]:
    """(seen, unseen): the unseen names appear only in validation/test."""
    shuffled = names[:]
    rng.shuffle(shuffled)
    k = max(1, round(len(names) * share))
    return sorted(shuffled[k:]), sorted(shuffled[:k])


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------------------------------------------
# NER
# ---------------------------------------------------------------------------------------------------
# Slots: {PER} a person where nothing to the left says "person" (never an ambiguous first name);
# {TPER} a person after a word that says "person"; {SUR} a surname after Mr./Ms./Dr.; {CITY}, {COUNTRY},
# {LOC} places after a word that says "place"; {ORG}, {CLUB}, {UNIV} organisations; {NAT} nationality
# adjective and {DEM} demonym (MISC); {EVENT} (MISC). Lower-case slots are O: {day} {num} {year} {prod}.
NER_TEMPLATES = [
    "{PER} flew from {CITY} to {CITY} on {day} .",
    "Shares of {ORG} rose {num} percent after the {CITY} office reported higher sales .",
    "Shares of {ORG} fell sharply on {day} after the company warned about weak demand in {COUNTRY} .",
    "The company {ORG} said on {day} that it would open a new plant in {CITY} .",
    "{ORG} chief executive {TPER} told reporters in {CITY} that profits would rise this year .",
    "Police in {CITY} said a man was arrested near the headquarters of {ORG} on {day} .",
    "{NAT} striker {TPER} scored twice as {CLUB} beat {CLUB} {num} - {num} in {CITY} .",
    "In {CITY} , {NAT} champion {TPER} won the {EVENT} for the second time .",
    "Mr. {SUR} , who joined {ORG} in {year} , will move to {CITY} next month .",
    "Ms. {SUR} said the talks with {ORG} had stalled .",
    "Analysts at {ORG} expect the central bank of {COUNTRY} to cut rates in the spring .",
    "{PER} , a spokesperson for {ORG} , declined to comment .",
    "The minister , {TPER} , arrived in {CITY} on {day} for talks with officials from {COUNTRY} .",
    "Heavy rain closed roads between {CITY} and {CITY} , officials in {COUNTRY} said .",
    "The {NAT} government said it would send aid to {COUNTRY} .",
    "The company {ORG} agreed to buy {ORG} for {num} million dollars , the two firms said on {day} .",
    "Dr. {SUR} of the {UNIV} led the study .",
    "Born in {LOC} , {TPER} moved to {CITY} at the age of {num} .",
    "Fans of {CLUB} celebrated in the streets of {CITY} late on {day} .",
    "The {EVENT} will be held in {CITY} , organisers said .",
    "{NAT} Prime Minister {TPER} met {NAT} President {TPER} in {CITY} on {day} .",
    "Flights between {CITY} and {CITY} were cancelled after a strike at {ORG} .",
    "{PER} , who grew up in {CITY} , now works for {ORG} in {COUNTRY} .",
    "A court in {CITY} fined {ORG} {num} million euros on {day} .",
    "The company {ORG} , based in {CITY} , makes {prod} .",
    "{DEM} {TPER} won the race in {CITY} ahead of {DEM} {TPER} .",
    "In the final , {DEM} {TPER} beat {DEM} {TPER} in three sets .",
    "Workers at the {ORG} {CITY} plant went on strike on {day} .",
    "Sales were strong this year , said {TPER} , who runs the {CITY} branch of {ORG} .",
    "Teams from {COUNTRY} , {COUNTRY} and {COUNTRY} will compete in the {EVENT} .",
    "Talks between {ORG} and {ORG} ended without a deal on {day} .",
    "{ORG} reported a loss of {num} million dollars for the quarter .",
    "Ambassador {TPER} returned to {CITY} from {COUNTRY} on {day} .",
    "Reporters asked spokesperson {TPER} about the {ORG} deal .",
    "{PER} and {PER} will meet in {CITY} next week .",
    "The {NAT} firm {ORG} hired {TPER} as its new director .",
    "Researchers at the {UNIV} said the trial in {CITY} would start on {day} .",
    "Coach {TPER} said {CLUB} would play without {TPER} against {CLUB} .",
    "Officials in {COUNTRY} said {num} people were hurt in {CITY} on {day} .",
    "{PER} , a former {prof} from {LOC} , joined the board of {ORG} in {year} .",
    "The group {ORG} lent {num} million dollars to the city of {CITY} .",
    "Prices in {COUNTRY} rose {num} percent in the year to {day} , the statistics office said .",
    "Mrs. {SUR} , whose family owns {ORG} , lives in {CITY} .",
    "After talks in {CITY} , the {NAT} and {NAT} ministers signed a trade deal .",
    "Visitors from {COUNTRY} and {COUNTRY} filled hotels in {CITY} during the {EVENT} .",
    "The company {ORG} will build electric vans in {CITY} from {year} , said {TPER} .",
    "On {day} , {PER} of {ORG} was named manager of the year .",
    "Singer {TPER} will give two concerts in {CITY} and one in {CITY} .",
    "The striker , signed by {CLUB} from {CLUB} last summer , scored again .",
    "Students at the {UNIV} protested against higher fees on {day} .",
    "Demand for {prod} from {COUNTRY} helped {ORG} double its profit .",
    "Police said {TPER} , {age} , was found safe in {CITY} .",
]
CONNECTORS = [[","], [",", "while"], [";", "meanwhile", ","], [",", "and"], [";", "in", "other", "news", ","],
              [";"], [",", "although"], [",", "after", "which"]]
GENERIC_LEADS = ["On {day} ,", "Earlier this week ,", "Last year ,", "Meanwhile ,", "Late on {day} ,",
                 "According to officials ,", "As expected ,"]
PER_LEADS = ["Economist", "Banker", "Writer", "Lawyer", "Activist", "Engineer", "Professor", "Architect"]
LEADS = {"PER": PER_LEADS, "TPER": PER_LEADS, "ORG": ["The company", "The firm", "The group"],
         "NAT": ["The"], "DEM": ["In the final ,"]}
TITLES = ["Mr.", "Ms.", "Mrs.", "Dr."]
PROFS_NER = ["banker", "diplomat", "pilot", "lawyer", "teacher", "engineer", "journalist", "surgeon"]


class NerPools:
    """The names each split may use; validation/test also get the held-out ones, in slots whose type
    the left context gives."""

    def __init__(self, rng: random.Random):
        self.first, self.first_new = _split_pool(rng, FEMALE + MALE, 0.12)
        self.sur, self.sur_new = _split_pool(rng, SURNAMES, 0.15)
        self.city, self.city_new = _split_pool(rng, CITIES, 0.15)
        self.multi_city, self.multi_city_new = _split_pool(rng, MULTI_CITIES, 0.15)
        self.country, self.country_new = _split_pool(rng, [c for c in COUNTRIES if c not in AMBIGUOUS_PLACES], 0.12)
        self.org_head, self.org_head_new = _split_pool(rng, ORG_HEADS, 0.15)
        # Each company keeps one fixed name, as real ones do: "Helix" or "Norwind Systems".
        self.org_name = {head: [head] if rng.random() < 0.2 else [head, rng.choice(ORG_TAILS)] for head in ORG_HEADS}

    def pick(self, rng: random.Random, seen: list[str], new: list[str], novel: bool) -> str:
        return rng.choice(new) if novel and rng.random() < 0.15 else rng.choice(seen)


def ner_entity(rng: random.Random, pools: NerPools, slot: str, novel: bool, first_word: bool
               ) -> tuple[list[str], str]:
    """Words and type of one slot. `novel`: held-out names allowed (validation/test, left context says
    the type); `first_word`: nothing to the left of the slot."""
    novel = novel and not first_word
    if slot in ("PER", "TPER"):
        if slot == "TPER" and not first_word and rng.random() < 0.12:
            first = rng.choice(list(AMBIGUOUS_FIRST))
        else:
            first = pools.pick(rng, pools.first, pools.first_new, novel)
        r = rng.random()
        sur = rng.choice(AMBIGUOUS_SUR) if r < 0.12 else pools.pick(rng, pools.sur, pools.sur_new, novel)
        words = [first, sur]
        if rng.random() < 0.04:
            words = [first, *rng.choice(PARTICLES).split(), sur]
        elif rng.random() < 0.02:
            words = [first, rng.choice("ABCDEHJKLMNPRST") + ".", sur]
        return words, "PER"
    if slot == "SUR":
        return [rng.choice(AMBIGUOUS_SUR) if rng.random() < 0.12 else
                pools.pick(rng, pools.sur, pools.sur_new, novel)], "PER"
    if slot == "CITY" or (slot == "LOC" and rng.random() < 0.6):
        r = rng.random()
        if r < 0.12:
            return [rng.choice(AMBIGUOUS_PLACES)], "LOC"
        if r < 0.27:
            return pools.pick(rng, pools.multi_city, pools.multi_city_new, novel).split(), "LOC"
        return [pools.pick(rng, pools.city, pools.city_new, novel)], "LOC"
    if slot in ("COUNTRY", "LOC"):
        if rng.random() < 0.1:
            return [rng.choice(["Jordan", "Georgia"])], "LOC"
        return pools.pick(rng, pools.country, pools.country_new, novel).split(), "LOC"
    if slot == "ORG":
        return list(pools.org_name[pools.pick(rng, pools.org_head, pools.org_head_new, novel)]), "ORG"
    if slot == "CLUB":
        return [rng.choice(CLUB_PREFIXES), *pools.pick(rng, pools.city, pools.city_new, novel).split()], "ORG"
    if slot == "UNIV":
        return ["University", "of", *pools.pick(rng, pools.city + pools.multi_city, pools.city_new, novel).split()], "ORG"
    if slot == "NAT":
        return [rng.choice(NATIONALITIES)], "MISC"
    if slot == "DEM":
        return [rng.choice(DEMONYMS)], "MISC"
    if slot == "EVENT":
        return rng.choice(EVENTS).split(), "MISC"
    if slot == "day":
        return [rng.choice(DAYS)], "O"
    if slot == "num":
        return [str(rng.choice([rng.randint(1, 9), rng.randint(10, 99), rng.randint(100, 900)]))], "O"
    if slot == "age":
        return [str(rng.randint(16, 90))], "O"
    if slot == "year":
        return [str(rng.randint(1990, 2024))], "O"
    if slot == "prod":
        return rng.choice(PRODUCTS).split(), "O"
    if slot == "prof":
        return [rng.choice(PROFS_NER)], "O"
    raise ValueError(slot)


def ner_clause(rng: random.Random, pools: NerPools, template: str, novel: bool
               ) -> tuple[list[str], list[str]]:
    tokens: list[str] = []
    tags: list[str] = []
    first = re.fullmatch(r"\{([A-Z]+)\}", template.split()[0])
    if first and rng.random() < 0.7:
        # Most sentences that open with a name get a few words before it: a causal model sees only the
        # left context (and, at the first position, nothing at all).
        typed = LEADS.get(first.group(1), []) if template.split()[1] != "," else []
        lead = rng.choice(typed + typed + GENERIC_LEADS)
        tokens = [rng.choice(DAYS) if w == "{day}" else w for w in lead.split()]
        tags = ["O"] * len(tokens)
    for word in template.split():
        m = re.fullmatch(r"\{(\w+)\}", word)
        if not m:
            tokens.append(word)
            tags.append("O")
            continue
        words, kind = ner_entity(rng, pools, m.group(1), novel, first_word=not tokens)
        tokens += words
        tags += ["O"] * len(words) if kind == "O" else [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
    return tokens, tags


def ner_sentence(rng: random.Random, pools: NerPools, novel: bool, long: bool) -> tuple[list[str], list[str]]:
    if not long:
        return ner_clause(rng, pools, rng.choice(NER_TEMPLATES), novel)
    # A run-on news sentence of 60-120 words: clauses joined by connectors.
    target = rng.randint(60, 120)
    while True:
        tokens, tags = ner_clause(rng, pools, rng.choice(NER_TEMPLATES)[:-2], novel)
        while len(tokens) < target:
            joint = rng.choice(CONNECTORS)
            more, more_tags = ner_clause(rng, pools, rng.choice(NER_TEMPLATES)[:-2], novel)
            if more_tags[0] == "O" and more[0] not in TITLES:  # "..., while officials said"
                more[0] = more[0].lower()
            tokens += joint + more
            tags += ["O"] * len(joint) + more_tags
        if len(tokens) <= 120:
            return tokens + ["."], tags + ["O"]
        tokens, tags = [], []


def make_ner(seed: int, sizes: dict[str, int] = NER_SIZES) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    pools = NerPools(rng)
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {}
    for name, size in sizes.items():
        n_long = max(2, round(size * 0.03))
        rows: list[dict] = []
        while len(rows) < size:
            long = len(rows) < n_long
            tokens, tags = ner_sentence(rng, pools, novel=name != "train", long=long)
            key = " ".join(tokens)
            if key in seen:
                continue
            seen.add(key)
            rows.append({"tokens": tokens, "ner_tags": tags})
        rng.shuffle(rows)
        splits[name] = rows
    return splits


# ---------------------------------------------------------------------------------------------------
# QA
# ---------------------------------------------------------------------------------------------------
class Context:
    """A context built sentence by sentence, remembering where each named slot's text starts."""

    def __init__(self):
        self.text = ""
        self.spans: dict[str, tuple[int, str]] = {}

    def add(self, template: str, values: dict[str, str]) -> None:
        if self.text:
            self.text += " "
        for piece in re.split(r"(\{\w+\})", template):
            if piece.startswith("{") and piece.endswith("}"):
                key = piece[1:-1]
                self.spans.setdefault(key, (len(self.text), values[key]))
                self.text += values[key]
            else:
                self.text += piece


class QaNames:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def person(self, used: set[str]) -> tuple[str, str]:
        while True:
            gender = self.rng.choice("fm")
            first = self.rng.choice(FEMALE if gender == "f" else MALE)
            name = f"{first} {self.rng.choice(SURNAMES + AMBIGUOUS_SUR)}"
            if name not in used and first not in {n.split()[0] for n in used}:
                used.add(name)
                return name, gender

    def one(self, pool: list[str], used: set[str]) -> str:
        while True:
            value = self.rng.choice(pool)
            if value not in used:
                used.add(value)
                return value

    def other(self, pool: list[str], banned: set[str]) -> str:
        while True:
            value = self.rng.choice(pool)
            if value not in banned:
                return value

    def org(self, used: set[str]) -> str:
        while True:
            head = self.rng.choice(ORG_HEADS)
            if all(not u.startswith(head + " ") and u != head for u in used):
                name = f"{head} {self.rng.choice(ORG_TAILS)}"
                used.add(name)
                return name

    def year(self, used: set[str], lo: int = 1950, hi: int = 2022) -> str:
        return self.one([str(y) for y in range(lo, hi + 1)], used)


def with_articles(v: dict[str, str]) -> dict[str, str]:
    """{an_prof} {prof}: "an engineer", "a pilot"."""
    for key in [k for k in v if k.endswith("prof")]:
        v[f"an_{key}"] = "an" if v[key][0] in "aeiou" else "a"
    return v


def pronouns(gender: str) -> dict[str, str]:
    return {"f": {"Pr": "She", "pr": "she", "Poss": "Her", "poss": "her"},
            "m": {"Pr": "He", "pr": "he", "Poss": "His", "poss": "his"}}[gender]


def pick_sentences(rng: random.Random, sentences: list[str]) -> list[str]:
    """The subject's sentence and 2-5 of the others, in order: 3-6 sentences."""
    keep = sorted(rng.sample(range(1, len(sentences)), rng.randint(2, len(sentences) - 1)))
    return [sentences[0]] + [sentences[i] for i in keep]


# Each profile: sentences (template variants per fact) and questions (template, answer slot).
def biography(names: QaNames, rng: random.Random, long: bool) -> tuple[str, dict, list, list]:
    used: set[str] = set()
    person, gender = names.person(used)
    other, other_gender = names.person(used)
    v = {"P": person, "P2": other, **pronouns(gender), "rel": rng.choice(RELATIONS[other_gender]),
         "born_city": names.one(CITIES + MULTI_CITIES, used), "born_year": names.year(used, 1940, 1995),
         "born_country": names.one(COUNTRIES, used), "field": rng.choice(FIELDS),
         "study_city": names.one(CITIES + MULTI_CITIES, used), "org": names.org(used),
         "prof": names.one(PROFESSIONS, used), "join_year": names.year(used, 1996, 2010),
         "found_org": names.org(used), "product": names.one(PRODUCTS, used),
         "found_year": names.year(used, 2011, 2022), "live_city": names.one(CITIES + MULTI_CITIES, used),
         "p2_born_city": names.one(CITIES + MULTI_CITIES, used), "p2_prof": names.one(PROFESSIONS, used),
         "p2_city": names.one(CITIES + MULTI_CITIES, used)}
    # In long contexts the facts are far apart: name the person instead of "she".
    who = "{P}" if long else "{Pr}"
    sentences = [
        rng.choice(["{P} was born in {born_city} in {born_year}.",
                    "{P} was born in {born_city}, {born_country}, in {born_year}."]),
        rng.choice([who + " studied {field} at the University of {study_city}.",
                    who + " studied {field} in {study_city} and later taught there."]),
        rng.choice(["In {join_year}, " + ("{P}" if long else "{pr}") + " joined {org} as {an_prof} {prof}.",
                    who + " worked as {an_prof} {prof} at {org} from {join_year}."]),
        rng.choice([who + " founded {found_org}, a maker of {product}, in {found_year}.",
                    "In {found_year}, " + ("{P}" if long else "{pr}") + " founded {found_org}, which makes {product}."]),
        rng.choice(["Today " + ("{P}" if long else "{pr}") + " lives in {live_city}.",
                    who + " now lives in {live_city} with " + ("{poss}" if not long else "two") + " children."]),
        rng.choice(["{Poss} {rel}, {P2}, was born in {p2_born_city}, works as {an_p2_prof} {p2_prof} and lives in {p2_city}.",
                    "{P2}, {an_p2_prof} {p2_prof} from {p2_born_city}, now lives in {p2_city}."]),
    ]
    if long:
        sentences[-1] = sentences[-1].replace("{Poss} {rel}, ", "{P}'s {rel}, ")
    sentences = pick_sentences(rng, sentences)
    questions = [
        ("Where was {P} born?", "born_city", 0), ("In what year was {P} born?", "born_year", 0),
        ("When was {P} born?", "born_year", 0),
        ("What did {P} study?", "field", 1), ("In which city did {P} study?", "study_city", 1),
        ("Which company did {P} join?", "org", 2), ("What was {P}'s job?", "prof", 2),
        ("What company did {P} found?", "found_org", 3), ("What does {found_org} make?", "product", 3),
        ("When did {P} start a company?", "found_year", 3), ("Where does {P} live?", "live_city", 4),
        ("Where was {P2} born?", "p2_born_city", 5), ("What is {P2}'s job?", "p2_prof", 5),
        ("Where does {P2} live?", "p2_city", 5),
    ]
    return person, with_articles(v), sentences, questions


def company(names: QaNames, rng: random.Random, long: bool) -> tuple[str, dict, list, list]:
    used: set[str] = set()
    org = names.org(used)
    v = {"O": org, "adj": rng.choice(ADJECTIVES), "base_city": names.one(CITIES + MULTI_CITIES, used),
         "country": names.one(COUNTRIES, used), "founded_year": names.year(used, 1900, 2000),
         "founder": names.person(used)[0], "founder_prof": names.one(PROFESSIONS, used),
         "product": names.one(PRODUCTS, used), "employees": f"{rng.randint(2, 95) * 100:,}",
         "office_year": names.year(used, 2001, 2022), "office_city": names.one(CITIES + MULTI_CITIES, used),
         "ceo": names.person(used)[0], "ceo_year": names.year(used, 2001, 2022), "rival": names.org(used),
         "rival_city": names.one(CITIES + MULTI_CITIES, used), "rival_product": names.one(PRODUCTS, used)}
    it = "{O}" if long else "It"
    sentences = [
        rng.choice(["{O} is a {adj} company based in {base_city}.",
                    "{O} is a {adj} firm based in {base_city}, {country}."]),
        rng.choice([("{O}" if long else "The company") + " was founded in {founded_year} by {founder}, a former {founder_prof}.",
                    it + " was founded by {founder}, {an_founder_prof} {founder_prof}, in {founded_year}."]),
        rng.choice([("{O}" if long else "The company") + " makes {product} and employs about {employees} people.",
                    it + " employs about {employees} people and makes {product}."]),
        rng.choice(["In {office_year}, " + ("{O}" if long else "it") + " opened a second office in {office_city}.",
                    it + " opened a second office in {office_city} in {office_year}."]),
        rng.choice([("{O}'s" if long else "Its") + " chief executive is {ceo}, who joined in {ceo_year}.",
                    "Since {ceo_year}, " + ("{O}" if long else "the company") + " has been run by {ceo}."]),
        ("The main rival of {O}" if long else "Its main rival") + ", {rival}, is based in {rival_city} and makes {rival_product}.",
    ]
    sentences = pick_sentences(rng, sentences)
    questions = [
        ("Where is {O} based?", "base_city", 0), ("Who founded {O}?", "founder", 1),
        ("When was {O} founded?", "founded_year", 1), ("In what year was {O} founded?", "founded_year", 1),
        ("What does {O} make?", "product", 2), ("How many people does {O} employ?", "employees", 2),
        ("Where did {O} open a second office?", "office_city", 3),
        ("When did {O} open its second office?", "office_year", 3),
        ("Who is the chief executive of {O}?", "ceo", 4), ("Who runs {O}?", "ceo", 4),
        ("What does {rival} make?", "rival_product", 5), ("Where is {rival} based?", "rival_city", 5),
    ]
    return org, with_articles(v), sentences, questions


def city(names: QaNames, rng: random.Random, long: bool) -> tuple[str, dict, list, list]:
    used: set[str] = set()
    name = names.one(CITIES + MULTI_CITIES, used)
    v = {"C": name, "country": names.one(COUNTRIES, used),
         "population": f"{rng.randint(20, 990) * 1000:,}", "river": names.one(RIVERS, used),
         "distance": f"{rng.randint(12, 480)} kilometres", "near_city": names.one(CITIES + MULTI_CITIES, used),
         "landmark": names.one(LANDMARKS, used), "landmark_year": names.year(used, 1200, 1950),
         "mayor": names.person(used)[0], "mayor_year": names.year(used, 2000, 2023),
         "employer": names.org(used), "product": names.one(PRODUCTS, used),
         "twin": names.one(CITIES + MULTI_CITIES, used), "twin_country": names.one(COUNTRIES, used)}
    it = "{C}" if long else "It"
    sentences = [
        rng.choice(["{C} is a city in {country} with about {population} inhabitants.",
                    "{C}, a city of about {population} people, lies in the north of {country}."]),
        it + rng.choice([" lies on the {river} river, {distance} from {near_city}.",
                         " is on the {river} river, {distance} from {near_city}."]),
        ("{C}" if long else "The city") + " is known for the {landmark}, which was built in {landmark_year}.",
        rng.choice([("The mayor of {C}" if long else "Its mayor") + ", {mayor}, was elected in {mayor_year}.",
                    "Since {mayor_year}, " + ("{C}" if long else "the city") + " has been led by mayor {mayor}."]),
        "The largest employer in " + ("{C}" if long else "the city") + " is {employer}, which makes {product}.",
        "{C} is twinned with {twin} in {twin_country}.",
    ]
    sentences = pick_sentences(rng, sentences)
    questions = [
        ("In which country is {C}?", "country", 0), ("How many people live in {C}?", "population", 0),
        ("On which river does {C} lie?", "river", 1), ("How far is {C} from {near_city}?", "distance", 1),
        ("What is {C} known for?", "landmark", 2), ("When was the {landmark} built?", "landmark_year", 2),
        ("Who is the mayor of {C}?", "mayor", 3), ("When was {mayor} elected?", "mayor_year", 3),
        ("What is the largest employer in {C}?", "employer", 4), ("What does {employer} make?", "product", 4),
        ("Which city is {C} twinned with?", "twin", 5),
    ]
    return name, v, sentences, questions


FILLERS = [
    "The weather in {city} is mild in spring and wet in autumn.",
    "A local newspaper, edited by {person}, prints about {num} copies a day.",
    "In {year}, a large fire destroyed part of the old harbour in {city}.",
    "Many visitors come for the summer music festival, which lasts {small} days.",
    "{person} was born in {city} in {year} and later moved to {city2}.",
    "The regional railway connects the area with {city} and {city2}.",
    "Farmers in the region grow wheat, grapes and olives on small plots.",
    "{org}, a maker of {product}, also has a small office in {city}.",
    "The local football club plays its home games at a stadium near the river.",
    "A museum of local history opened in {year} and has about {num} visitors a year.",
    "The economy grew slowly for many years, and many young people moved to {city}.",
    "Public transport includes buses, trams and a small ferry across the bay.",
    "In {year}, {person} wrote a popular book about the history of {city}.",
    "The main square is lined with cafes, small shops and a covered market.",
    "{org} was founded in {year} by {person} and is based in {city}.",
    "Winters can be long, and snow often closes the mountain roads for weeks.",
    "A new bridge over the {river} river was finished in {year}.",
    "{person}, a well-known {prof}, lives in {city} and teaches at a local school.",
    "Every autumn a food fair brings farmers and cooks from {city} and {city2}.",
    "The old town was rebuilt after a flood in {year}.",
    "Most people in the area work in trade, tourism or fishing.",
    "The nearest airport is in {city}, about {small} kilometres away.",
    "{person} opened the first bookshop in the district in {year}.",
    "A large park with a lake lies to the east of the centre.",
    "In {year}, {org} moved its main warehouse to {city}.",
    "Local schools teach history, science, music and two foreign languages.",
    "The hospital, built in {year}, has about {small} beds.",
    "Several film festivals and sports events take place here every year.",
    "The university library holds about {num} old maps and letters.",
    "In {year}, the region was hit by a long drought that ruined the harvest.",
    "{person} runs a small bakery near the harbour and sells bread to {org}.",
    "A ferry to {city} leaves twice a day in summer.",
    "Fishing boats still land their catch at dawn in the old port.",
    "The population fell during the war but rose again after {year}.",
    "{org} sponsors the annual marathon, which starts near the cathedral.",
    "Most houses in the old quarter are built of red brick and stone.",
    "{person}, who studied {field} in {city}, leads the local choir.",
    "A cable car takes visitors up the hill to a famous viewpoint.",
    "The local radio station was started in {year} by a group of students.",
    "Local markets sell cheese, honey and smoked fish every Saturday.",
    "In {year}, {person} became the first person to run the chamber of commerce.",
    "The area is popular with hikers, cyclists and bird watchers.",
]
STATIC_FILLERS = [f for f in FILLERS if "{" not in f]


def fillers(names: QaNames, rng: random.Random, banned: set[str], words: int) -> list[str]:
    """At least `words` words of sentences about other people, companies and cities: distractors,
    never about the subject. A sentence without names is used once at most."""
    out: list[str] = []
    static = STATIC_FILLERS[:]
    rng.shuffle(static)
    while sum(len(f.split()) for f in out) < words:
        template = rng.choice(FILLERS)
        if "{" not in template:
            if not static:
                continue
            template = static.pop()
        values = {"city": names.other(CITIES + MULTI_CITIES, banned),
                  "city2": names.other(CITIES + MULTI_CITIES, banned),
                  "person": names.person(set(banned))[0], "org": names.org(set(banned)),
                  "product": rng.choice(PRODUCTS), "year": str(rng.randint(1850, 2022)),
                  "num": f"{rng.randint(2, 90) * 1000:,}", "small": str(rng.randint(3, 60)),
                  "river": rng.choice(RIVERS), "prof": rng.choice(PROFESSIONS), "field": rng.choice(FIELDS)}
        out.append(re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template))
    return out


def alternatives(text: str, start: int, answer: str, key: str, rng: random.Random) -> list[tuple[str, int]]:
    """Other reference answers a human might have marked, as SQuAD's dev set has."""
    alts: list[tuple[str, int]] = []
    for prefix in ("in ", "about ", "the "):
        if text[:start].endswith(prefix):
            alts.append((prefix + answer, start - len(prefix)))
    if key == "distance":
        number = answer.split()[0]
        alts.append((number, start))  # "250" for "250 kilometres"
    if key in ("founder", "ceo", "mayor") and " " in answer:
        surname = answer.split(" ", 1)[1]
        alts.append((surname, start + len(answer) - len(surname)))
    if key in ("product", "rival_product") and " " in answer:
        head = answer.rsplit(" ", 1)[1]
        alts.append((head, start + len(answer) - len(head)))
    return alts


PROFILES = [biography, company, city]


def qa_context(names: QaNames, rng: random.Random, long: bool) -> tuple[str, str, list[tuple[str, str, int, str]]]:
    """(title, context, [(question, answer, answer_start, slot)])."""
    title, v, sentences, question_templates = rng.choice(PROFILES)(names, rng, long)
    ctx = Context()
    present = set()
    body = sentences
    if long:
        banned = set(v.values())
        words = sum(len(re.sub(r"\{(\w+)\}", lambda m: v[m.group(1)], s).split()) for s in sentences)
        fill = fillers(names, rng, banned, rng.randint(250, 400) - words)
        # The subject's sentence first, the other facts in order at random places among the fillers
        # (the last one may come last).
        total = len(fill) + len(sentences)
        places = [0] + sorted(rng.sample(range(1, total), len(sentences) - 1))
        facts, others = iter(sentences), iter(fill)
        body = [next(facts) if i in places else next(others) for i in range(total)]
    for s in body:
        ctx.add(s, v)
    for s in sentences:
        present.update(re.findall(r"\{(\w+)\}", s))
    qas = []
    for template, key, _ in question_templates:
        needed = set(re.findall(r"\{(\w+)\}", template))
        if key not in present or not needed <= present:
            continue
        question = re.sub(r"\{(\w+)\}", lambda m: v[m.group(1)], template)
        start, answer = ctx.spans[key]
        qas.append((question, answer, start, key))
    return title, ctx.text, qas


def make_qa(seed: int, sizes: dict[str, int] = QA_SIZES) -> dict[str, list[dict]]:
    rng = random.Random(seed + 1)
    names = QaNames(rng)
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {}
    for split, size in sizes.items():
        rows: list[dict] = []
        n_contexts = 0
        while len(rows) < size:
            long = n_contexts % 20 == 7  # 5% of the contexts, spread over the file
            title, context, qas = qa_context(names, rng, long)
            if context in seen or not qas:
                continue
            seen.add(context)
            n_contexts += 1
            # Two or three questions a context, never two with the same answer slot.
            rng.shuffle(qas)
            chosen, keys, k = [], set(), 2 if long else rng.choice([2, 3])
            for qa in qas:
                if qa[3] not in keys and len(chosen) < k:
                    chosen.append(qa)
                    keys.add(qa[3])
            for question, answer, start, key in chosen[:size - len(rows)]:
                refs = [(answer, start)]
                if split != "train" and rng.random() < 0.4:
                    alts = alternatives(context, start, answer, key, rng)
                    if alts:
                        refs.append(rng.choice(alts))
                    if rng.random() < 0.3:
                        refs.append((answer, start))  # two annotators marked the same span
                for text, s in refs:
                    assert context[s:s + len(text)] == text, (context, text, s)
                rows.append({"id": f"{split}-{len(rows):05d}", "title": title, "question": question,
                             "context": context, "answers": {"text": [t for t, _ in refs],
                                                             "answer_start": [s for _, s in refs]},
                             "_long": long})
        splits[split] = rows
    return splits


# ---------------------------------------------------------------------------------------------------
def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps({k: v for k, v in row.items() if not k.startswith("_")}, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=REPO / "data",
                        help="writes OUT_DIR/sample_ner/*.jsonl and OUT_DIR/sample_qa/*.jsonl")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    ner = make_ner(args.seed)
    train_words = {w for r in ner["train"] for w, t in zip(r["tokens"], r["ner_tags"]) if t != "O"}
    for split, rows in ner.items():
        path = args.out_dir / "sample_ner" / f"{split}.jsonl"
        write_jsonl(path, rows)
        lengths = [len(r["tokens"]) for r in rows]
        entities = sum(t.startswith("B-") for r in rows for t in r["ner_tags"])
        new = sum(w not in train_words for r in rows for w, t in zip(r["tokens"], r["ner_tags"]) if t != "O")
        print(f"wrote {path}: {len(rows)} sentences, mean {sum(lengths) / len(rows):.1f} words, "
              f"{sum(n >= 60 for n in lengths)} long (60-120 words), {entities} entities, "
              f"{new} entity words unseen in train")

    qa = make_qa(args.seed)
    for split, rows in qa.items():
        path = args.out_dir / "sample_qa" / f"{split}.jsonl"
        write_jsonl(path, rows)
        contexts = list(dict.fromkeys(r["context"] for r in rows))
        words = [len(c.split()) for c in contexts]
        n_long = sum(n >= 250 for n in words)
        multi = sum(len(r["answers"]["text"]) > 1 for r in rows)
        print(f"wrote {path}: {len(rows)} questions, {len(contexts)} contexts, mean {sum(words) / len(words):.1f} "
              f"words a context, {n_long} long contexts ({sum(r['_long'] for r in rows)} questions), "
              f"{multi} questions with several answers")


if __name__ == "__main__":
    main()
