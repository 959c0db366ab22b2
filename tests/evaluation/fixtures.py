"""Small local copies of the paper's evaluation datasets, in each hub dataset's own schema.

Two hand-written records per language and task, laid out as DIR/<hub dataset name>/<config>/<split>.jsonl,
exactly what `wonton-hf eval --data-dir DIR` reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# language config -> (passage, [(question, [4 answers], correct "1".."4")])
_BELEBELE: dict[str, tuple[str, list[tuple[str, list[str], str]]]] = {
    "eng_Latn": (
        "The river flooded the old town in spring. Volunteers built walls of sandbags and the museum moved its paintings upstairs.",
        [
            (
                "What did the museum do?",
                ["Closed forever", "Moved its paintings upstairs", "Sold the paintings", "Built a wall"],
                "2",
            ),
            ("When did the river flood?", ["In winter", "In autumn", "In spring", "In summer"], "3"),
        ],
    ),
    "deu_Latn": (
        "Der Fluss überschwemmte im Frühling die Altstadt. Freiwillige bauten Mauern aus Sandsäcken.",
        [
            ("Was bauten die Freiwilligen?", ["Brücken", "Mauern aus Sandsäcken", "Häuser", "Boote"], "2"),
            ("Wann kam das Hochwasser?", ["Im Frühling", "Im Herbst", "Im Winter", "Im Sommer"], "1"),
        ],
    ),
    "fra_Latn": (
        "La rivière a inondé la vieille ville au printemps. Des bénévoles ont construit des murs de sacs de sable.",
        [
            (
                "Qu'ont construit les bénévoles ?",
                ["Des ponts", "Des bateaux", "Des murs de sacs de sable", "Des maisons"],
                "3",
            ),
            ("Quand la rivière a-t-elle débordé ?", ["En hiver", "Au printemps", "En été", "En automne"], "2"),
        ],
    ),
    "ita_Latn": (
        "Il fiume ha allagato la città vecchia in primavera. I volontari hanno costruito muri di sacchi di sabbia.",
        [
            ("Che cosa hanno costruito i volontari?", ["Ponti", "Barche", "Case", "Muri di sacchi di sabbia"], "4"),
            ("Quando è esondato il fiume?", ["In primavera", "In inverno", "In estate", "In autunno"], "1"),
        ],
    ),
    "spa_Latn": (
        "El río inundó el casco antiguo en primavera. Los voluntarios levantaron muros de sacos de arena.",
        [
            ("¿Qué levantaron los voluntarios?", ["Puentes", "Muros de sacos de arena", "Barcos", "Casas"], "2"),
            ("¿Cuándo se desbordó el río?", ["En invierno", "En verano", "En primavera", "En otoño"], "3"),
        ],
    ),
    "zho_Hans": (
        "春天河水淹没了老城。志愿者用沙袋筑起了墙，博物馆把画搬到了楼上。",
        [
            ("博物馆做了什么？", ["永久关闭", "把画搬到了楼上", "卖掉了画", "修了一座桥"], "2"),
            ("河水什么时候泛滥？", ["冬天", "秋天", "春天", "夏天"], "3"),
        ],
    ),
    "jpn_Jpan": (
        "春に川が旧市街を浸水させた。ボランティアは土のうで壁を作り、博物館は絵を上の階に移した。",
        [
            ("博物館は何をしましたか？", ["閉館した", "絵を上の階に移した", "絵を売った", "橋を作った"], "2"),
            ("川はいつ氾濫しましたか？", ["春", "夏", "秋", "冬"], "1"),
        ],
    ),
    "kor_Hang": (
        "봄에 강이 구시가지를 덮쳤다. 자원봉사자들은 모래주머니로 벽을 쌓았다.",
        [
            ("자원봉사자들은 무엇을 쌓았나요?", ["다리", "배", "모래주머니 벽", "집"], "3"),
            ("강은 언제 범람했나요?", ["겨울", "봄", "여름", "가을"], "2"),
        ],
    ),
}

_XNLI: dict[str, list[dict[str, Any]]] = {
    "en": [
        {"premise": "The children are playing football in the park.", "hypothesis": "Kids are outside.", "label": 0},
        {"premise": "The shop closes at six.", "hypothesis": "The shop is open all night.", "label": 2},
    ],
    "de": [
        {"premise": "Die Kinder spielen im Park Fußball.", "hypothesis": "Die Kinder sind draußen.", "label": 0},
        {"premise": "Der Laden schließt um sechs.", "hypothesis": "Der Besitzer heißt Klaus.", "label": 1},
    ],
    "zh": [
        {"premise": "孩子们在公园里踢足球。", "hypothesis": "孩子们在户外。", "label": 0},
        {"premise": "商店六点关门。", "hypothesis": "商店整夜营业。", "label": 2},
    ],
}

_XSTORYCLOZE: dict[str, list[dict[str, Any]]] = {
    "en": [
        {
            "story_id": "en-1",
            "input_sentence_1": "Anna wanted to bake bread.",
            "input_sentence_2": "She bought flour.",
            "input_sentence_3": "She kneaded the dough for ten minutes.",
            "input_sentence_4": "Then she put it in the oven.",
            "sentence_quiz1": "The bread came out golden.",
            "sentence_quiz2": "Anna hates bread.",
            "answer_right_ending": 1,
        },
        {
            "story_id": "en-2",
            "input_sentence_1": "Tom missed the bus.",
            "input_sentence_2": "It was raining.",
            "input_sentence_3": "He had no umbrella.",
            "input_sentence_4": "He walked to work.",
            "sentence_quiz1": "He arrived dry and early.",
            "sentence_quiz2": "He arrived soaked and late.",
            "answer_right_ending": 2,
        },
    ],
    "es": [
        {
            "story_id": "es-1",
            "input_sentence_1": "Ana quería hornear pan.",
            "input_sentence_2": "Compró harina.",
            "input_sentence_3": "Amasó la masa diez minutos.",
            "input_sentence_4": "Luego la metió en el horno.",
            "sentence_quiz1": "El pan salió dorado.",
            "sentence_quiz2": "Ana odia el pan.",
            "answer_right_ending": 1,
        },
        {
            "story_id": "es-2",
            "input_sentence_1": "Tomás perdió el autobús.",
            "input_sentence_2": "Estaba lloviendo.",
            "input_sentence_3": "No tenía paraguas.",
            "input_sentence_4": "Fue andando al trabajo.",
            "sentence_quiz1": "Llegó seco y temprano.",
            "sentence_quiz2": "Llegó empapado y tarde.",
            "answer_right_ending": 2,
        },
    ],
    "zh": [
        {
            "story_id": "zh-1",
            "input_sentence_1": "安娜想烤面包。",
            "input_sentence_2": "她买了面粉。",
            "input_sentence_3": "她揉了十分钟面。",
            "input_sentence_4": "然后她把面包放进烤箱。",
            "sentence_quiz1": "面包烤得金黄。",
            "sentence_quiz2": "安娜讨厌面包。",
            "answer_right_ending": 1,
        },
        {
            "story_id": "zh-2",
            "input_sentence_1": "汤姆错过了公交车。",
            "input_sentence_2": "外面在下雨。",
            "input_sentence_3": "他没有带伞。",
            "input_sentence_4": "他走路去上班。",
            "sentence_quiz1": "他干干爽爽地提前到了。",
            "sentence_quiz2": "他浑身湿透还迟到了。",
            "answer_right_ending": 2,
        },
    ],
}

_XWINOGRAD: dict[str, list[dict[str, Any]]] = {
    "en": [
        {
            "sentence": "The trophy does not fit in the suitcase because the _ is too big.",
            "option1": "trophy",
            "option2": "suitcase",
            "answer": "1",
        },
        {
            "sentence": "The cat chased the mouse until the _ was tired and hid.",
            "option1": "cat",
            "option2": "mouse",
            "answer": "2",
        },
    ],
    "fr": [
        {
            "sentence": "Le trophée ne rentre pas dans la valise car le _ est trop grand.",
            "option1": "trophée",
            "option2": "valise",
            "answer": "1",
        },
        {
            "sentence": "Marie a remercié Julie parce que _ l'avait aidée.",
            "option1": "Marie",
            "option2": "Julie",
            "answer": "2",
        },
    ],
    "jp": [
        {
            "sentence": "トロフィーはスーツケースに入らなかった。_が大きすぎたからだ。",
            "option1": "トロフィー",
            "option2": "スーツケース",
            "answer": "1",
        },
        {
            "sentence": "花子は太郎にお礼を言った。_が手伝ってくれたからだ。",
            "option1": "花子",
            "option2": "太郎",
            "answer": "2",
        },
    ],
}

_RACE_PROBLEMS = [
    {
        "question": "Where did the family go?",
        "options": ["The beach", "The mountains", "A museum", "A farm"],
        "answer": "B",
    },
    {
        "question": "The family came home  _  .",
        "options": ["early", "happy and tired", "angry", "by plane"],
        "answer": "B",
    },
]

_ENGLISH: dict[tuple[str, str, str], list[dict[str, Any]]] = {
    ("lambada_openai", "default", "test"): [
        {"text": "She opened the door, looked at the rain and went back for her umbrella"},
        {"text": "He counted the coins twice before he paid for the bread"},
    ],
    ("winogrande", "winogrande_xl", "validation"): [
        {
            "sentence": "Sarah lent Maria her car because _ needed to drive to work.",
            "option1": "Sarah",
            "option2": "Maria",
            "answer": "2",
        },
        {
            "sentence": "The glass broke when it hit the floor because the _ was fragile.",
            "option1": "glass",
            "option2": "floor",
            "answer": "1",
        },
    ],
    ("hellaswag", "default", "validation"): [
        {
            "ind": 1,
            "activity_label": "Making tea",
            "ctx_a": "A man boils water in a kettle.",
            "ctx_b": "he",
            "ctx": "A man boils water in a kettle. he",
            "split": "val",
            "split_type": "indomain",
            "source_id": "a",
            "endings": ["pours it over a tea bag.", "throws the kettle away.", "paints the wall.", "starts to swim."],
            "label": "0",
        },
        {
            "ind": 2,
            "activity_label": "Gardening [title] Plant seeds",
            "ctx_a": "A woman digs a small hole.",
            "ctx_b": "she",
            "ctx": "A woman digs a small hole. she",
            "split": "val",
            "split_type": "indomain",
            "source_id": "b",
            "endings": ["eats the shovel.", "drops seeds in and covers them.", "flies away.", "reads a newspaper."],
            "label": "1",
        },
    ],
    ("piqa", "default", "validation"): [
        {"goal": "To cool a hot drink quickly,", "sol1": "add ice cubes.", "sol2": "put it in the oven.", "label": 0},
        {
            "goal": "To open a jar with a tight lid,",
            "sol1": "freeze the jar.",
            "sol2": "run the lid under hot water.",
            "label": 1,
        },
    ],
    ("race", "high", "test"): [
        {
            "example_id": "r1",
            "article": "Last summer the family drove to the mountains. They hiked every day and "
            "came home happy and tired.",
            "problems": repr(_RACE_PROBLEMS),
        },
        {
            "example_id": "r2",
            "article": "The library opens at nine. Students often wait outside with coffee.",
            "problems": repr(
                [
                    {
                        "question": "When does the library open?",
                        "options": ["At eight", "At nine", "At ten", "At noon"],
                        "answer": "B",
                    }
                ]
            ),
        },
    ],
    ("super_glue", "boolq", "validation"): [
        {
            "idx": 0,
            "passage": "The Nile is a major river in northeastern Africa.",
            "question": "is the nile in africa",
            "label": 1,
        },
        {
            "idx": 1,
            "passage": "Penguins are flightless birds of the southern hemisphere.",
            "question": "can penguins fly",
            "label": 0,
        },
    ],
}


def _belebele_records(config: str) -> list[dict[str, Any]]:
    passage, questions = _BELEBELE[config]
    return [
        {
            "link": "fixture",
            "question_number": number,
            "flores_passage": passage,
            "question": question,
            "mc_answer1": answers[0],
            "mc_answer2": answers[1],
            "mc_answer3": answers[2],
            "mc_answer4": answers[3],
            "correct_answer_num": correct,
            "dialect": config,
            "ds": "fixture",
        }
        for number, (question, answers, correct) in enumerate(questions, start=1)
    ]


def offline_datasets() -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """(hub dataset name, config, split) -> records, for every task of the `all` suite."""
    data: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for config in _BELEBELE:
        data["belebele", config, "test"] = _belebele_records(config)
    for language, records in _XNLI.items():
        data["xnli", language, "validation"] = records
    for language, records in _XSTORYCLOZE.items():
        data["xstory_cloze", language, "eval"] = records
    for language, records in _XWINOGRAD.items():
        data["xwinograd", language, "test"] = records
    data.update(_ENGLISH)
    return data


def write_offline_data(root: Path) -> Path:
    for (dataset, config, split), records in offline_datasets().items():
        path = root / dataset / config / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return root


def corpus_texts() -> list[str]:
    """Every string of the fixtures, to train the test tokenizer on the same languages."""
    texts: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    for records in offline_datasets().values():
        collect(records)
    return texts


def build_tokenizer(vocab_size: int = 600):
    """A byte-level BPE trained on the fixtures' languages, as a PreTrainedTokenizerFast (ids as the paper's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<unk>", "<s>", "</s>"],  # pad 0, unk 1, bos 2, eos 3
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_texts(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def build_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A randomly initialised wonton-tiny model and its tokenizer, saved with save_pretrained.

    `import wonton_hf` registers the Auto classes, so save_pretrained also exports the modelling code
    (auto_map) and the directory loads with trust_remote_code where wonton_hf is not installed.
    """
    import torch

    from wonton_hf import WontonConfig, WontonForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = WontonForCausalLM(WontonConfig.from_preset("wonton-tiny", vocab_size=len(tokenizer)))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
