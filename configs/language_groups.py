"""The named language groups of the study, in one place.

A study reports each benchmark per language, by seen / unseen (the fold's training
languages decide), and by these groups; its planned targets are macros over them
(`eval.benchmarks`: each entry's `groups`, `StudyTarget.group`). Codes are the project's
(ISO 639-1 where the benchmarks use it, e.g. sw; AfriQA's three-letter codes otherwise).
"""

# TyDi QA GoldP languages no fold trains on, split by how much text the web has in them:
# the question is whether fine-tuning protects the low-resource ones.
TYDI_LOW_RESOURCE = ("bn", "sw", "te")
TYDI_MID_RESOURCE = ("fi", "id", "ko", "ru")  # ru: trained only in fold B (then "seen")

# AfriQA's languages (all unseen by training); NTREX-128 has these (not fon, twi).
AFRIQA_IN_NTREX = ("bem", "ewe", "hau", "ibo", "kin", "sw", "wol", "yor", "zul")

# NTREX-128: the low-resource group = TyDi's low-resource languages, the AfriQA languages
# and eight more African languages with little web text (Amharic, Northern Sotho, Chichewa,
# Shona, Somali, Tigrinya, Tswana, Xhosa).
NTREX_LOW_RESOURCE = tuple(dict.fromkeys(
    TYDI_LOW_RESOURCE + AFRIQA_IN_NTREX + ("amh", "nso", "nya", "sna", "som", "tir", "tsn", "xho")))

TYDI_GROUPS = {"low-resource": TYDI_LOW_RESOURCE, "mid-resource": TYDI_MID_RESOURCE}
NTREX_GROUPS = {"low-resource": NTREX_LOW_RESOURCE, "mid-resource": TYDI_MID_RESOURCE,
                "AfriQA": AFRIQA_IN_NTREX}
