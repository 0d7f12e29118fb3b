"""English and Simplified Chinese, for command definitions and for replies.

Command names, descriptions and choices are `app_commands.locale_str`s that
`ArtTranslator` translates when commands are synced, so Discord shows each user
their own language. Replies go through `t(key, locale, **values)`, which picks
the language from the interaction's locale (the user's Discord client).
"""

from __future__ import annotations

import discord
from discord import app_commands

# English text -> Simplified Chinese, for command names, descriptions and choices.
COMMAND_ZH: dict[str, str] = {
    # names (Discord allows letters of any script in command names)
    "draw": "画图",
    "vary": "变体",
    "history": "历史",
    "job": "作品",
    "queue": "队列",
    "help": "帮助",
    # option names
    "prompt": "提示词",
    "negative": "反向提示词",
    "model": "模型",
    "size": "尺寸",
    "steps": "步数",
    "seed": "种子",
    "count": "数量",
    "image": "图片",
    "strength": "强度",
    "user": "用户",
    "id": "编号",
    # descriptions
    "Draw images from a text prompt": "根据文字描述画图",
    "What to draw": "要画的内容",
    "What to keep out of the image": "不希望出现在图中的内容",
    "Which model draws it": "使用哪个模型",
    "Shape and size of the image": "图片的形状和尺寸",
    "Denoising steps (more is slower, often finer)": "去噪步数（越多越慢，通常更精细）",
    "Seed, to make the same image again": "种子，用来再次生成同一张图",
    "How many images (1-4)": "生成几张图（1-4）",
    "Make a variation of an image": "生成一张图片的变体",
    "An image to vary": "要生成变体的图片",
    "An earlier job: its id or a link to its message": "之前的作品：编号或消息链接",
    "How far the variation may move from the image": "变体与原图的差别程度",
    "What the variation should show (optional)": "变体应当呈现的内容（可选）",
    "Your recent images, with prompts and seeds": "你最近的作品，包括提示词和种子",
    "Whose history (default: yours)": "查看谁的历史（默认：你自己）",
    "Bring back an earlier job with its buttons": "找回之前的作品及其按钮",
    "Job id (the number shown with each result)": "作品编号（每个结果旁显示的数字）",
    "Your queued and running jobs": "你排队中和进行中的任务",
    "How to use artbot": "如何使用 artbot",
    "stylize": "风格化",
    "preset": "预设",
    "style": "风格",
    "method": "方法",
    "add": "添加",
    "list": "列表",
    "remove": "删除",
    "name": "名称",
    "Restyle an image like a style image, a preset or words": "按风格图片、预设或文字描述为图片换风格",
    "The image to restyle": "要换风格的图片",
    "An image whose style to copy": "要模仿其风格的图片",
    "A style saved by the server's admins": "服务器管理员保存的风格",
    "A style in words (diffusion)": "用文字描述的风格（扩散模型）",
    "gatys: careful, slower; adain: fast; diffusion: by words": "gatys：细致较慢；adain：快速；diffusion：按文字",
    "How strong the style is": "风格的强度",
    "Longest side of the result in pixels": "结果最长边的像素数",
    "Style presets for /stylize": "/stylize 的风格预设",
    "Save a style image under a name": "以名称保存一张风格图片",
    "Name of the preset": "预设名称",
    "The style image": "风格图片",
    "The style presets of this server": "本服务器的风格预设",
    "Remove a style preset": "删除一个风格预设",
    # choices
    "Subtle": "轻微",
    "Strong": "强烈",
    "Square": "方形",
    "Portrait": "竖版",
    "Landscape": "横版",
}

# Reply texts: key -> {language: template}.
MESSAGES: dict[str, dict[str, str]] = {
    "queued": {"en": "⏳ Queued, position {position}.", "zh": "⏳ 已排队，第 {position} 位。"},
    "starting": {"en": "🎨 Starting…", "zh": "🎨 开始生成…"},
    "progress": {"en": "🎨 Drawing… step {step} of {total}", "zh": "🎨 生成中… 第 {step}/{total} 步"},
    "failed": {"en": "❌ Job {job} failed: {error}", "zh": "❌ 任务 {job} 失败：{error}"},
    "canceled": {"en": "🚫 Job {job} was canceled.", "zh": "🚫 任务 {job} 已取消。"},
    "late_result": {
        "en": "{mention}, your job {job} is done.",
        "zh": "{mention}，你的任务 {job} 完成了。",
    },
    "internal_error": {
        "en": "Something went wrong on our side (error {ref}). The bot's operator can look it up.",
        "zh": "我们这边出了问题（错误编号 {ref}），机器人管理员可以据此排查。",
    },
    "delete_refused": {
        "en": "Only the person who asked for this image, or someone who can manage messages, can delete it.",
        "zh": "只有发起者或有管理消息权限的人才能删除这张图。",
    },
    "deleted": {"en": "Deleted.", "zh": "已删除。"},
    "job_not_found": {"en": "There is no job {job} in this server.", "zh": "本服务器没有编号为 {job} 的作品。"},
    "job_not_image": {
        "en": "Job {job} has no finished image to vary.",
        "zh": "任务 {job} 还没有可以生成变体的图片。",
    },
    "vary_needs_source": {
        "en": "Give an image to vary: attach one, or name an earlier job (its id or message link).",
        "zh": "请提供要变化的图片：上传一张，或给出之前作品的编号或消息链接。",
    },
    "not_an_image": {
        "en": "{name} is not an image (PNG, JPEG, WebP or GIF).",
        "zh": "{name} 不是图片（支持 PNG、JPEG、WebP、GIF）。",
    },
    "image_too_large": {
        "en": "{name} is {size} MB; images up to {limit} MB are accepted.",
        "zh": "{name} 大小为 {size} MB，只接受 {limit} MB 以内的图片。",
    },
    "stylize_one_style": {
        "en": "Give one style: a style image, a preset, or a prompt.",
        "zh": "请只给出一种风格：风格图片、预设或文字描述。",
    },
    "preset_unknown": {"en": "There is no preset called {name}.", "zh": "没有名为 {name} 的预设。"},
    "preset_saved": {"en": "Preset {name} saved.", "zh": "预设 {name} 已保存。"},
    "preset_removed": {"en": "Preset {name} removed.", "zh": "预设 {name} 已删除。"},
    "preset_none": {"en": "No presets yet.", "zh": "还没有预设。"},
    "needs_manage_server": {
        "en": "Only members who can manage this server can do that.",
        "zh": "只有能管理本服务器的成员才能这样做。",
    },
    "history_title": {"en": "Recent images of {user}", "zh": "{user} 最近的作品"},
    "history_empty": {"en": "No images yet. Try /draw.", "zh": "还没有作品，试试 /draw。"},
    "history_page": {"en": "Page {page} of {pages}", "zh": "第 {page}/{pages} 页"},
    "queue_empty": {"en": "You have nothing queued or running.", "zh": "你没有排队或进行中的任务。"},
    "queue_title": {"en": "Your jobs", "zh": "你的任务"},
    "queue_running_now": {"en": "Running now", "zh": "正在运行"},
    "queue_line_queued": {"en": "Job {job}: queued, position {position}", "zh": "任务 {job}：排队第 {position} 位"},
    "queue_line_running": {"en": "Job {job}: running, {progress}", "zh": "任务 {job}：运行中，{progress}"},
    "step_of": {"en": "step {step} of {total}", "zh": "第 {step}/{total} 步"},
    "nothing_running": {"en": "Nothing is running.", "zh": "当前没有任务在运行。"},
    "field_seed": {"en": "Seed", "zh": "种子"},
    "field_seeds": {"en": "Seeds", "zh": "种子"},
    "field_model": {"en": "Model", "zh": "模型"},
    "field_steps": {"en": "Steps", "zh": "步数"},
    "field_time": {"en": "Time", "zh": "耗时"},
    "field_parent": {"en": "Variation of", "zh": "变体来源"},
    "field_strength": {"en": "Strength", "zh": "强度"},
    "button_reroll": {"en": "Reroll", "zh": "重画"},
    "button_vary_subtle": {"en": "Vary (subtle)", "zh": "轻微变体"},
    "button_vary_strong": {"en": "Vary (strong)", "zh": "强烈变体"},
    "button_remix": {"en": "Remix", "zh": "改写"},
    "button_delete": {"en": "Delete", "zh": "删除"},
    "button_previous": {"en": "Previous", "zh": "上一页"},
    "button_next": {"en": "Next", "zh": "下一页"},
    "remix_title": {"en": "Remix: edit the prompt", "zh": "改写：编辑提示词"},
    "remix_label": {"en": "Prompt", "zh": "提示词"},
    "variation": {"en": "(variation)", "zh": "（变体）"},
    "help_title": {"en": "artbot", "zh": "artbot"},
    "help_text": {
        "en": (
            "**/draw** `prompt` draws images; add `count` for a 2×2 grid, `seed` to repeat one.\n"
            "**/vary** an uploaded image or an earlier job (id or message link), subtle or strong.\n"
            "**/stylize** an image like a style image, an admin's preset, or a style in words.\n"
            "**/history** your recent images with prompts, seeds and links.\n"
            "**/job** `id` brings an old result back with working buttons.\n"
            "**/queue** your queued and running jobs.\n\n"
            "Under each result: 🔁 reroll with a new seed, 🎲 subtle and 🌀 strong variations, "
            "✏️ remix (edit the prompt), 🗑️ delete. On a grid, V1–V4 vary one image and U1–U4 "
            "show one at full size. Reactions work too: 🔁 reroll, 🎲 vary, 🗑️ delete."
        ),
        "zh": (
            "**/draw** `提示词` 画图；加上 `数量` 生成 2×2 网格，用 `种子` 重现同一张图。\n"
            "**/vary** 对上传的图片或之前的作品（编号或消息链接）生成轻微或强烈的变体。\n"
            "**/stylize** 按风格图片、管理员的预设或文字描述为图片换风格。\n"
            "**/history** 查看你最近的作品、提示词、种子和链接。\n"
            "**/job** `编号` 找回旧作品，按钮依然可用。\n"
            "**/queue** 查看你排队中和进行中的任务。\n\n"
            "每个结果下方：🔁 换种子重画，🎲 轻微变体，🌀 强烈变体，✏️ 改写提示词，🗑️ 删除。"
            "网格图上 V1–V4 对单张生成变体，U1–U4 单独显示一张。也可以用表情回应：🔁 重画，🎲 变体，🗑️ 删除。"
        ),
    },
}


def language(locale: discord.Locale | str | None) -> str:
    """'zh' for Chinese locales (simplified and traditional fall back to it), else 'en'."""
    value = getattr(locale, "value", locale) or ""
    return "zh" if str(value).lower().startswith("zh") else "en"


def t(key: str, locale: discord.Locale | str | None = None, **values) -> str:
    texts = MESSAGES[key]
    template = texts.get(language(locale)) or texts["en"]
    return template.format(**values)


class ArtTranslator(app_commands.Translator):
    """Translates command names, descriptions and choices for Chinese clients."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContext,
    ) -> str | None:
        if locale is not discord.Locale.chinese:
            return None
        text = string.message
        if text in COMMAND_ZH:
            return COMMAND_ZH[text]
        # Choices such as "Square 512×512": translate the word, keep the numbers.
        word, _, rest = text.partition(" ")
        if word in COMMAND_ZH and rest:
            return f"{COMMAND_ZH[word]} {rest}"
        return None
