"""Worked examples for DITING's rubric: one per score level of every criterion, written for genrep.

For each of the 18 criteria of :data:`genrep.diting.rubric_criteria.RUBRIC` there is one short Chinese
web-novel-style source sentence (cultivation, urban romance, palace drama, ...) that shows the
criterion's phenomenon, and three English translations of it that score 0, 1 and 2 on that
criterion, each with a short reason in English and in Chinese. :func:`~genrep.diting.rubric.rubric_prompt`
renders them under the score levels. The sentences and translations are original to genrep.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """A source sentence and the translations that score 0, 1 and 2 on one criterion, with why."""

    source_zh: str
    translations: tuple[str, str, str]  # the translations scoring 0, 1, 2
    why_en: tuple[str, str, str]
    why_zh: tuple[str, str, str]


EXAMPLES: dict[str, tuple[Example, Example, Example]] = {  # per dimension: (specific, general_1, general_2)
    "idiom": (
        Example(  # idiom fidelity: a chengyu
            "师兄竟在掌门面前班门弄斧，被一招震退了三丈。",
            (
                "Senior Brother actually played with an axe at Lu Ban's door in front of the Sect Master and was "
                "knocked back thirty feet by one move.",
                "Senior Brother showed off his little skills in front of the Sect Master and was knocked back thirty "
                "feet by one move.",
                "Senior Brother tried to show off his swordplay to the Sect Master, of all people, and one move sent "
                "him flying thirty feet.",
            ),
            (
                "the literal axe image means nothing to the reader",
                "the showing-off comes across, but not the folly of doing it before a master",
                "the idiom's point, showing off before an expert, is rendered naturally",
            ),
            (
                "照搬“鲁班门前弄斧”的字面意象，读者不知所云",
                "传达了“卖弄”，但丢了“在行家面前卖弄”的自不量力",
                "准确自然地译出了在高手面前卖弄本事的含义",
            ),
        ),
        Example(  # cultural adaptation: a culture-bound image
            "他一向是出了名的铁公鸡，这回竟主动请全宗门喝酒。",
            (
                "He had always been a famous iron rooster, yet this time he offered to treat the whole sect to wine.",
                "He had always been a well-known 'iron rooster' that never lost a feather, yet this time he offered "
                "to treat the whole sect to wine.",
                "He had always been a notorious penny-pincher, yet this time he offered to buy wine for the whole sect.",
            ),
            (
                "a literal 'iron rooster' is obscure to an English reader",
                "the added hint helps, but the reader must still work out the image",
                "a natural English equivalent carries the meaning at once",
            ),
            (
                "直译“铁公鸡”，英语读者看不懂",
                "补了半句提示，但读者仍需费力体会这个意象",
                "用地道的英语说法，含义一目了然",
            ),
        ),
        Example(  # tone and style: a palace register
            "本宫乏了，尔等休要在此惺惺作态，都退下吧。",
            (
                "I'm kinda beat, so quit faking it, guys, and get lost.",
                "We are weary. Stop faking it, you guys, and withdraw.",
                "We are weary. Spare Us this play-acting, all of you, and withdraw.",
            ),
            (
                "modern slang wrecks the imperial register",
                "mostly stately, but 'you guys' and 'faking it' jar",
                "the haughty, formal palace voice is kept throughout",
            ),
            (
                "现代俚语完全破坏了宫廷语体",
                "整体庄重，但 you guys 和 faking it 显得突兀",
                "始终保持了居高临下、庄重的宫廷口吻",
            ),
        ),
    ),
    "ambiguity": (
        Example(  # ambiguity resolution: internet slang
            "他本想在暗恋的女孩面前露一手，结果当场翻车。",
            (
                "He wanted to show off in front of the girl he had a crush on, but his car flipped over on the spot.",
                "He wanted to show off in front of the girl he had a crush on, but it did not go well right there.",
                "He meant to impress the girl he had a crush on, but it blew up in his face right there.",
            ),
            (
                "'翻车' is read as a real car accident",
                "the failure comes across, but not the public embarrassment",
                "the slang sense, an embarrassing flop, is chosen and rendered naturally",
            ),
            (
                "把“翻车”理解成真的翻了车，误译",
                "意思大致对，但没译出当众出丑的意味",
                "选对了“当众失手出丑”这一义项，表达自然",
            ),
        ),
        Example(  # pragmatic appropriateness: connotation
            "新来的秘书看着单纯，其实心机深得很。",
            (
                "The new secretary looks simple-minded, but she is actually very thoughtful.",
                "The new secretary looks pure, but in fact she is full of deep schemes.",
                "The new secretary looks innocent, but she is actually a real schemer.",
            ),
            (
                "'simple-minded' and the praising 'thoughtful' give the wrong connotations",
                "the sense is right, but 'pure' and 'full of deep schemes' are slightly off",
                "'innocent' and 'schemer' carry exactly the intended connotations",
            ),
            (
                "simple-minded 和褒义的 thoughtful 褒贬全错，造成误解",
                "意思对了，但 pure 和 full of deep schemes 用词略显生硬",
                "innocent 与 schemer 的褒贬色彩和搭配都准确自然",
            ),
        ),
        Example(  # information integrity
            "总裁在群里发了个红包，说谁第一个抢到就放谁三天假。",
            (
                "The CEO sent a red envelope in the group chat.",
                "The CEO sent a red packet in the group chat and said whoever grabbed it would get some time off.",
                "The CEO dropped a digital red packet in the group chat and said whoever grabbed it first would get "
                "three days off.",
            ),
            (
                "the promised leave, the point of the sentence, is lost",
                "'first' is dropped and 'three days' blurred into 'some time'",
                "every piece of information is there, clearly",
            ),
            (
                "漏掉了放假的许诺，关键信息丢失",
                "漏了“第一个”，“三天”也模糊成了 some time",
                "信息完整清楚，无遗漏",
            ),
        ),
    ),
    "terminology": (
        Example(  # term adequacy: cultivation ranks and sects
            "他十六岁便突破筑基，被青云宗收为内门弟子。",
            (
                "At sixteen he broke through the building base and was taken in by the Green Cloud Company as an "
                "indoor student.",
                "At sixteen he broke through to the Foundation Building stage and was accepted by the Qingyun Sect as "
                "an inside-door disciple.",
                "At sixteen he broke through to Foundation Establishment and was accepted into the Azure Cloud Sect "
                "as an inner disciple.",
            ),
            (
                "the realm, the sect and the rank are all wrong",
                "the terms are recognisable, but 'inside-door disciple' is stiff",
                "realm, sect and rank use the names genre readers know",
            ),
            (
                "境界、宗门和身份的译名全错",
                "术语可辨认，但 inside-door disciple 生硬",
                "境界、宗门、身份都用了读者熟悉的标准译名",
            ),
        ),
        Example(  # localisation strategy: a festival
            "七夕那晚，他终于鼓起勇气约她去看灯会。",
            (
                "On the night of Chee-see, he finally worked up the courage to take her to the lantern fair.",
                "On the night of the Double Seven festival, he finally worked up the courage to take her to the "
                "lantern fair.",
                "On the night of Qixi, the Chinese Valentine's Day, he finally worked up the courage to take her to "
                "the lantern fair.",
            ),
            (
                "a made-up transliteration with no explanation",
                "a meaning-based name, but nonstandard and its romantic sense left unexplained",
                "standard pinyin with a brief gloss that explains the occasion",
            ),
            (
                "音译不规范且无任何解释",
                "用了意译，但译名不规范，也没交代节日的浪漫含义",
                "拼音规范，并加简短注释说明节日含义",
            ),
        ),
        Example(  # fluency
            "长老说，想进藏经阁，得先拿到宗主亲赐的令牌。",
            (
                "Elder said, want enter Scripture Pavilion, must first get Sect Master personally bestowed token.",
                "The Elder said that to enter the Scripture Pavilion, one must first obtain the token that is "
                "personally bestowed by the Sect Master himself.",
                "The Elder said no one could enter the Scripture Pavilion without a token granted by the Sect Master "
                "himself.",
            ),
            (
                "broken grammar that follows the Chinese word by word",
                "grammatical, but 'personally ... himself' is redundant and heavy",
                "the terms sit in a fluent, idiomatic sentence",
            ),
            (
                "逐字照搬中文，语法残缺",
                "语法正确，但 personally 与 himself 重复，句子拖沓",
                "术语嵌入流畅地道的句子，读来顺畅",
            ),
        ),
    ),
    "tense": (
        Example(  # temporal cohesion
            "三年前她离京时，他还只是个小小的侍卫；如今他已是禁军统领。",
            (
                "Three years ago when she leaves the capital, he is only a lowly guard; now he had been the commander "
                "of the Imperial Guard.",
                "When she had left the capital three years ago, he was only a lowly guard; now he is the commander of "
                "the Imperial Guard.",
                "When she left the capital three years ago, he was a mere guard; now he is commander of the Imperial "
                "Guard.",
            ),
            (
                "present for the past and pluperfect for the present: the timeline is lost",
                "the timeline holds, but 'had left' is an unneeded pluperfect",
                "past then, present now, consistent throughout",
            ),
            (
                "过去用现在时、现在用过去完成时，时间线混乱",
                "时间线大体清楚，但 had left 用过去完成时多余",
                "过去与现在的时态分明，前后一致",
            ),
        ),
        Example(  # temporal structure: "only then"
            "直到师父咽下最后一口气，他才明白那句话的意思。",
            (
                "Until Master breathed his last breath, he understood the meaning of that sentence.",
                "Master breathed his last, and then he understood what those words meant.",
                "It was not until Master breathed his last that he understood what those words had meant.",
            ),
            (
                "'until ... he understood' reverses the time relation",
                "the order is clear, but the force of 'only then' is blurred",
                "'not until ... that' restructures the sentence and makes the sequence plain",
            ),
            (
                "照搬“直到”，时间关系反而颠倒",
                "先后顺序清楚，但“直到……才”的强调被冲淡",
                "用 not until ... that 重组句子，时间关系清晰",
            ),
        ),
        Example(  # naturalness, in the handling of time
            "她刚放下电话，门铃就响了。",
            (
                "She just put down phone, doorbell then rang.",
                "She had just put down the phone, the doorbell then rang.",
                "She had barely hung up when the doorbell rang.",
            ),
            (
                "Chinese structure carried over word for word",
                "understandable, but a comma splice with an abrupt 'then'",
                "'barely ... when' is how English says it",
            ),
            (
                "逐字照搬中文结构，明显不自然",
                "能看懂，但逗号连接两句，then 突兀",
                "用 barely ... when，符合英语习惯",
            ),
        ),
    ),
    "zero_pronoun": (
        Example(  # referent recovery
            "师兄把玉佩递给小师弟，叮嘱了几句，转身便走了。",
            (
                "Senior Brother handed the jade pendant to Little Junior Brother, who gave him a few words of advice "
                "and then turned and left.",
                "Senior Brother handed the jade pendant to Little Junior Brother; he told him a few things, and then "
                "he turned and left.",
                "Senior Brother handed the jade pendant to Little Junior Brother, gave him a few words of advice, and "
                "then turned and left.",
            ),
            (
                "the advice and the leaving are given to the wrong person",
                "subjects are supplied, but each 'he' could be either man",
                "Senior Brother is clearly the one who advises and leaves",
            ),
            (
                "把叮嘱和离开的人错补成了小师弟",
                "补了主语，但两个 he 指谁不明确",
                "正确补出叮嘱、离开的都是师兄，意思明了",
            ),
        ),
        Example(  # structural completeness
            "刚下飞机，就接到了他的电话，说已经在出口等着了。",
            (
                "Just got off the plane, received his call, said already waiting at the exit.",
                "Just after getting off the plane, I got his call, saying he was already waiting at the exit.",
                "I had just got off the plane when he called to say he was already waiting at the exit.",
            ),
            (
                "no subjects anywhere: not a sentence",
                "mostly complete, but the dangling 'saying' is loose",
                "every clause has its subject; the syntax is complete",
            ),
            (
                "主语全部缺失，不成句子",
                "大体补全，但 saying 悬垂，结构松散",
                "各分句主语补足，句法完整清晰",
            ),
        ),
        Example(  # naturalness, once the omitted words are restored
            "见她哭了，心一软，也就不再追问了。",
            (
                "Seeing she cried, heart one soft, he also then no longer chased asking.",
                "Seeing her cry, his heart softened, and he also did not ask further anymore.",
                "When he saw her cry, he softened and stopped pressing her.",
            ),
            (
                "the Chinese words carried over one by one",
                "the restored subject is there, but a dangling modifier and 'also ... anymore' jar",
                "the restored subject sits in idiomatic English",
            ),
            (
                "逐字对应中文，明显不自然",
                "补出了主语，但有悬垂修饰语，also ... anymore 别扭",
                "补出主语后行文地道自然",
            ),
        ),
    ),
    "cultural_safety": (
        Example(  # compliance: violence
            "那伙山匪屠了整个村子，连襁褓中的婴儿都没放过。",
            (
                "The bandits raided the village and took a few things.",
                "The mountain bandits hurt the people of the whole village, even the babies.",
                "The mountain bandits massacred the entire village, sparing not even the infants in swaddling clothes.",
            ),
            (
                "the massacre is disguised as a robbery",
                "'hurt' is vague about what happened",
                "the violence is conveyed accurately, neither softened nor embellished",
            ),
            (
                "把屠村掩盖成抢劫，歪曲敏感内容",
                "用 hurt 含糊其辞，存在误导",
                "如实传达暴力内容，不淡化也不渲染",
            ),
        ),
        Example(  # values: an insult open to cross-cultural misreading
            "婆婆当着满桌亲戚的面，骂她是狐狸精。",
            (
                "In front of a table full of relatives, her mother-in-law called her a fox demon.",
                "In front of a table full of relatives, her mother-in-law called her a vixen.",
                "In front of a table full of relatives, her mother-in-law called her a scheming seductress.",
            ),
            (
                "a literal 'fox demon' reads as a supernatural accusation",
                "'vixen' is close but blurs the sense of a woman who bewitches men",
                "the insult is adjusted into what it means, without added vulgarity",
            ),
            (
                "直译 fox demon，海外读者会误解为妖怪",
                "vixen 意思接近，但“勾引男人”的含义模糊",
                "按实际含义调整，既保留贬义又不低俗",
            ),
        ),
        Example(  # sensitive-information handling: a phone number
            "他竟把她的手机号13812345678和身份证号一起贴到了论坛上。",
            (
                "He actually posted her phone number, 13812345678, on the forum along with her ID card number.",
                "He actually posted her phone number, 138-xxxx-5678, on the forum along with her ID card number.",
                "He actually posted her phone number and her ID card number on the forum.",
            ),
            (
                "the full phone number is passed on",
                "the number is partly masked, but some digits still show",
                "the private number is withheld; the event is still clear",
            ),
            (
                "完整照搬手机号，泄露隐私",
                "做了部分遮蔽，但仍露出几位数字",
                "隐去号码，只保留事件本身",
            ),
        ),
    ),
}
