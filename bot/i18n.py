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
    "sampler": "采样器",
    "guidance": "引导强度",
    "lora": "lora",
    "cancel": "取消",
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
    "Sampler, as in A1111 (default: the model's own)": "采样器，与 A1111 中的名称相同（默认：模型自带的）",
    "How closely to follow the prompt (default: the model's own)": "多大程度上遵循提示词（默认：模型自带的）",
    "Cancel one of your jobs (its id)": "取消你的一个任务（填编号）",
    "A LoRA to apply, NAME or NAME:WEIGHT (more: <lora:NAME:0.8> in the prompt)":
        "要使用的 LoRA，写作 名称 或 名称:权重（更多个：在提示词中写 <lora:名称:0.8>）",
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
    "settings": "设置",
    "quota": "配额",
    "stats": "统计",
    "show": "查看",
    "set": "设定",
    "reset": "重置",
    "tier": "角色配额",
    "audit": "审计",
    "key": "项目",
    "value": "值",
    "channel": "频道",
    "role": "角色",
    "Server rules for artbot (Manage Server)": "本服务器的 artbot 规则（需要管理服务器权限）",
    "Show this server's rules, or one channel's": "查看本服务器或某个频道的规则",
    "Change one rule": "修改一项规则",
    "Put one rule back to its default": "把一项规则恢复为默认值",
    "Give a role its own daily quota": "为一个角色设定每日配额",
    "Recent changes to the rules": "最近的规则修改记录",
    "Which rule": "哪一项规则",
    "The new value (lists: a, b; +a adds; -a removes)": "新值（列表：a, b；+a 添加；-a 删除）",
    "Only in this channel (for rules that allow it)": "仅在这个频道生效（限支持的规则）",
    "The role": "角色",
    "Images per day, unlimited, or none to remove the tier": "每日图片数、unlimited，或 none 取消",
    "How many images you have left today": "你今天还剩多少张图",
    "This server's usage: images, top users, queue, speed": "本服务器的使用情况：图片数、活跃用户、队列、速度",
    # choices
    "Subtle": "轻微",
    "Strong": "强烈",
    "Square": "方形",
    "Portrait": "竖版",
    "Landscape": "横版",
    # image tools (issue 16)
    "blend": "融合",
    "describe": "描述",
    "image1": "图片1",
    "image2": "图片2",
    "image3": "图片3",
    "image4": "图片4",
    "image5": "图片5",
    "style_preset": "风格预设",
    # members' data
    "forget": "删除我的数据",
    "server": "服务器",
    "export": "导出",
    "Delete your jobs and images, here or in every server": "删除你的任务和图片（本服务器或所有服务器）",
    "Where to delete (default: this server)": "在哪里删除（默认：本服务器）",
    "This server": "本服务器",
    "Every server": "所有服务器",
    "Send your own prompts, seeds and parameters as a file": "把你自己的提示词、种子和参数作为文件发给你",
    "Blend 2 to 5 images into one": "把 2 到 5 张图片融合成一张",
    "An image to blend": "要融合的图片",
    "Another image to blend (optional)": "另一张要融合的图片（可选）",
    "What the blend should show (optional)": "融合结果应当呈现的内容（可选）",
    "Which model blends them": "使用哪个模型融合",
    "Turn an image into prompts to draw from": "把一张图片变成可以用来画图的提示词",
    "An image to describe": "要描述的图片",
    "A style reference: the images are drawn in its style": "风格参考：按这张图片的风格画图",
    "A style preset of this server, as a style reference": "本服务器的风格预设，作为风格参考",
}

# Reply texts: key -> {language: template}.
MESSAGES: dict[str, dict[str, str]] = {
    "queued": {"en": "⏳ Queued, position {position}.", "zh": "⏳ 已排队，第 {position} 位。"},
    "queued_relax": {
        "en": "🐢 In the relax queue, position {position}: it runs when no fast job waits.",
        "zh": "🐢 已进入慢速队列，第 {position} 位：没有快速任务等待时才会运行。",
    },
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
    "storage_fault": {
        "en": "The bot cannot save anything right now ({reason}). Its operator has been told; "
              "nothing of yours was lost, so try again a little later.",
        "zh": "机器人现在无法保存任何内容（{reason}）。管理员已收到通知；你的内容没有丢失，请稍后再试。",
    },
    "delete_refused": {
        "en": "Only the person who asked for this image, or someone who can manage messages, can delete it.",
        "zh": "只有发起者或有管理消息权限的人才能删除这张图。",
    },
    "deleted": {"en": "Deleted.", "zh": "已删除。"},
    "cancel_refused": {
        "en": "Only the person who asked for job {job}, or someone who can manage messages, can cancel it.",
        "zh": "只有任务 {job} 的发起者或有管理消息权限的人才能取消它。",
    },
    "cancel_done": {"en": "Job {job} is canceled.", "zh": "任务 {job} 已取消。"},
    "cancel_stopping": {"en": "Job {job} stops at its next step.", "zh": "任务 {job} 将在下一步停止。"},
    "cancel_too_late": {"en": "Job {job} has already ended ({status}).",
                        "zh": "任务 {job} 已经结束（{status}）。"},
    "job_not_found": {"en": "There is no job {job} in this server.", "zh": "本服务器没有编号为 {job} 的作品。"},
    "job_deleted": {
        "en": "This result was deleted (job {job}): its owner removed their data, or it was older "
              "than this server keeps results.",
        "zh": "这个结果已被删除（任务 {job}）：它的主人删除了自己的数据，或它超过了本服务器的保留期限。",
    },
    # /forget and /history export (bot.privacy)
    "forget_where_here": {"en": "in this server", "zh": "在本服务器"},
    "forget_where_everywhere": {"en": "in every server", "zh": "在所有服务器"},
    "forget_nothing": {"en": "You have no jobs {where}; there is nothing to delete.",
                       "zh": "你{where}没有任务，没有可删除的内容。"},
    "forget_confirm": {
        "en": "Delete your {jobs} jobs and {images} images {where}, with the bot's messages that "
              "show them? This cannot be undone. Jobs still queued or running are canceled "
              "first; today's quota stays used. (This question expires in {minutes} minutes.)",
        "zh": "要删除你{where}的 {jobs} 个任务和 {images} 张图片，以及显示它们的机器人消息吗？"
              "此操作无法撤销。排队中或进行中的任务会先被取消；今天已用的额度不会恢复。"
              "（此确认在 {minutes} 分钟后失效。）",
    },
    "forget_button_confirm": {"en": "Delete them", "zh": "删除"},
    "forget_button_cancel": {"en": "Cancel", "zh": "取消"},
    "forget_working": {"en": "Deleting your jobs and images…", "zh": "正在删除你的任务和图片……"},
    "forget_done": {"en": "Deleted {jobs} jobs and {images} images of yours {where}.",
                    "zh": "已删除你{where}的 {jobs} 个任务和 {images} 张图片。"},
    "forget_canceled": {"en": "Nothing was deleted.", "zh": "没有删除任何内容。"},
    "forget_expired": {
        "en": "This question has expired and nothing was deleted; run /forget again.",
        "zh": "此确认已失效，没有删除任何内容；请重新运行 /forget。",
    },
    "forget_not_yours": {"en": "Only the member who ran /forget can answer this.",
                         "zh": "只有运行 /forget 的成员才能回答。"},
    "forget_busy": {"en": "Your data is being deleted already.", "zh": "你的数据已经在删除中。"},
    "export_others": {"en": "You can export only your own history.",
                      "zh": "你只能导出自己的历史。"},
    "export_empty": {"en": "You have no jobs yet; there is nothing to export.",
                     "zh": "你还没有任务，没有可导出的内容。"},
    "export_done": {
        "en": "Your {jobs} jobs in every server: prompts, seeds and parameters ({format}).",
        "zh": "你在所有服务器的 {jobs} 个任务：提示词、种子和参数（{format}）。",
    },
    "export_too_large": {
        "en": "Your history is too large for one Discord file ({size}); the bot's operator can "
              "export it with `artbot history --export FILE --user {user}`.",
        "zh": "你的历史太大，无法作为一个 Discord 文件发送（{size}）；机器人管理员可以用 "
              "`artbot history --export FILE --user {user}` 导出。",
    },
    "job_not_image": {
        "en": "Job {job} has no finished image to vary.",
        "zh": "任务 {job} 还没有可以生成变体的图片。",
    },
    "vary_needs_source": {
        "en": "Give an image to vary: attach one, or name an earlier job (its id or message link).",
        "zh": "请提供要变化的图片：上传一张，或给出之前作品的编号或消息链接。",
    },
    # Uploads that cannot be used (worker.image_files; the English is the same there).
    "not_an_image": {
        "en": "{name} is not an image that can be read: send a PNG, JPEG, WebP, GIF, AVIF, BMP "
              "or TIFF image.",
        "zh": "{name} 不是可以读取的图片：请发送 PNG、JPEG、WebP、GIF、AVIF、BMP 或 TIFF 图片。",
    },
    "image_empty": {
        "en": "{name} is empty (0 bytes), not an image that can be read: send a PNG, JPEG, WebP, "
              "GIF, AVIF, BMP or TIFF image.",
        "zh": "{name} 是空文件（0 字节），不是可以读取的图片：请发送 PNG、JPEG、WebP、GIF、AVIF、"
              "BMP 或 TIFF 图片。",
    },
    "image_damaged": {
        "en": "{name} is a damaged or incomplete {format} file, not an image that can be read: "
              "save or download it again (accepted: PNG, JPEG, WebP, GIF, AVIF, BMP or TIFF).",
        "zh": "{name} 是损坏或不完整的 {format} 文件，无法读取：请重新保存或下载后再发送"
              "（支持 PNG、JPEG、WebP、GIF、AVIF、BMP、TIFF）。",
    },
    "image_foreign": {
        "en": "{name} is in {format} format, not an image that can be read here: export it as "
              "PNG or JPEG (accepted: PNG, JPEG, WebP, GIF, AVIF, BMP or TIFF).",
        "zh": "{name} 是 {format} 格式，这里无法读取：请导出为 PNG 或 JPEG"
              "（支持 PNG、JPEG、WebP、GIF、AVIF、BMP、TIFF）。",
    },
    "image_too_many_pixels": {
        "en": "{name} is too large: {megapixels} megapixels{dims}, over the limit of {limit} "
              "megapixels (for example {side}x{side}). Scale it down and send it again.",
        "zh": "{name} 太大了：{megapixels} 百万像素{dims}，超过了 {limit} 百万像素的上限"
              "（例如 {side}x{side}）。请缩小后再发送。",
    },
    "image_mode": {
        "en": "{name} has a colour mode ({mode}) that cannot be turned into RGB: save it as an "
              "ordinary 8-bit PNG or JPEG.",
        "zh": "{name} 的颜色模式（{mode}）无法转换为 RGB：请另存为普通的 8 位 PNG 或 JPEG。",
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
    "queue_line_relax": {"en": " · 🐢 relax time: runs when no fast job waits",
                         "zh": " · 🐢 慢速时段：没有快速任务等待时运行"},
    "queue_line_running": {"en": "Job {job}: running, {progress}", "zh": "任务 {job}：运行中，{progress}"},
    "step_of": {"en": "step {step} of {total}", "zh": "第 {step}/{total} 步"},
    "nothing_running": {"en": "Nothing is running.", "zh": "当前没有任务在运行。"},
    # The estimated wait (worker.fleet.estimate_wait, worded by rough_duration's unit).
    "queue_line_queued_wait": {"en": "Job {job}: queued, position {position}, starts in {wait}",
                               "zh": "任务 {job}：排队第 {position} 位，{wait}后开始"},
    "wait_under_minute": {"en": "under a minute", "zh": "不到一分钟"},
    "wait_minutes": {"en": "about {n} min", "zh": "约 {n} 分钟"},
    "wait_hours": {"en": "about {n} h", "zh": "约 {n} 小时"},
    # Refusals by the server's rules (worker.policy, worker.gate), under their Refusal key;
    # {when} is a Discord timestamp.
    "quota": {
        "en": "You have used your {images} for today; the quota resets {when}.",
        "zh": "你今天的 {quota} 张图片额度已用完，额度将于 {when} 重置。",
    },
    "quota_partial": {
        "en": "You have {left} of your {images} left today; ask for {left} or fewer, "
              "or wait until the quota resets {when}.",
        "zh": "你今天的 {quota} 张额度还剩 {left} 张；请最多要 {left} 张，或等额度于 {when} 重置。",
    },
    "cooldown": {"en": "Slow down: you can ask again {when}.", "zh": "请稍等：{when} 后可以再次请求。"},
    "blocked": {"en": "This server does not allow that prompt.", "zh": "本服务器不允许这个提示词。"},
    "unchecked": {
        "en": "This prompt could not be checked against the server's blocklist in time; "
              "try a shorter prompt.",
        "zh": "未能及时用本服务器的屏蔽词表检查这个提示词；请换一个更短的提示词。",
    },
    "channel": {"en": "I only draw in {channels} on this server.", "zh": "在本服务器我只在 {channels} 画图。"},
    "model": {
        "en": "The model {model} is not allowed here; allowed: {allowed}.",
        "zh": "这里不允许使用模型 {model}；允许的模型：{allowed}。",
    },
    "lora": {"en": "The LoRA {lora} is not allowed here; allowed: {allowed}.",
             "zh": "这里不允许使用 LoRA {lora}；允许的有：{allowed}。"},
    "family": {"en": "{family} models are not allowed here.", "zh": "这里不允许使用 {family} 类模型。"},
    "limit": {"en": "This server allows at most {limit} {what}.", "zh": "本服务器最多允许 {limit}（{what}）。"},
    "settings_title": {"en": "artbot rules of {server}", "zh": "{server} 的 artbot 规则"},
    "settings_channel_title": {"en": "artbot rules in {channel}", "zh": "{channel} 中的 artbot 规则"},
    "settings_changed": {"en": "{name}: {old} → {new}", "zh": "{name}：{old} → {new}"},
    "settings_unchanged": {"en": "{name} already is {value}.", "zh": "{name} 已经是 {value}。"},
    "settings_overrides": {"en": "Channel overrides", "zh": "频道单独设置"},
    "settings_audit_title": {"en": "Recent rule changes", "zh": "最近的规则修改"},
    "settings_audit_empty": {"en": "No changes yet.", "zh": "还没有修改记录。"},
    "quota_title": {"en": "Your quota here", "zh": "你在这里的额度"},
    "quota_unlimited": {"en": "No daily limit: {used} images today.", "zh": "没有每日上限：今天已用 {used} 张。"},
    "quota_left": {
        "en": "Fast time: **{left}** of your {images} left today (resets {when}).",
        "zh": "快速时间：今天还剩 **{left}** / {quota} 张（{when} 重置）。",
    },
    "quota_on_fast": {"en": "You are on fast time.", "zh": "你正在使用快速时间。"},
    "quota_on_relax": {
        "en": "You are on relax time: your jobs run when no fast job waits.",
        "zh": "你正在使用慢速时间：没有快速任务等待时，你的任务才会运行。",
    },
    "quota_no_relax": {
        "en": "Relax time is off on this server: you can draw again when the quota resets.",
        "zh": "本服务器未开启慢速时间：额度重置后才能再画。",
    },
    "quota_relax_used": {"en": "Relax time today: {images}.", "zh": "今天慢速时间：{used} 张。"},
    "made_in_relax": {"en": "made in relax time", "zh": "慢速时间生成"},
    "made_by_ai": {"en": "🤖 Made by AI with {model}", "zh": "🤖 由 AI 生成，模型：{model}"},
    "quota_cooldown": {"en": "Cooldown: you can ask again {when}.", "zh": "冷却中：{when} 后可以再次请求。"},
    "quota_day": {"en": "Days here start at midnight {zone}.", "zh": "这里的每一天从 {zone} 时间的午夜开始。"},
    "quota_queued": {"en": "Jobs waiting or running: {pending} of {limit}.", "zh": "排队或进行中的任务：{pending} / {limit}。"},
    "stats_title": {"en": "artbot in {server}", "zh": "artbot 在 {server}"},
    "stats_images": {"en": "Images", "zh": "图片"},
    "stats_images_value": {"en": "today {today} · last 7 days {week}", "zh": "今天 {today} · 近 7 天 {week}"},
    "stats_top": {"en": "Top users (7 days)", "zh": "活跃用户（近 7 天）"},
    "stats_queue": {"en": "Queue", "zh": "队列"},
    "stats_queue_value": {
        "en": "{queued} waiting, {running} running here; {all} waiting on all servers",
        "zh": "本服务器 {queued} 个排队、{running} 个运行中；所有服务器共 {all} 个排队",
    },
    "stats_models": {"en": "Per model (7 days): jobs · mean wait · mean generation",
                     "zh": "各模型（近 7 天）：任务数 · 平均等待 · 平均生成"},
    "stats_workers": {"en": "Workers serving now", "zh": "正在服务的工作进程"},
    "stats_worker_line": {"en": "`{id}` ({where}) · {device} · jobs done: {jobs} · {current} · seen {seen}",
                          "zh": "`{id}`（{where}）· {device} · 已完成任务：{jobs} · {current} · 最近在线 {seen}"},
    "stats_worker_models": {"en": "models: {models}", "zh": "模型：{models}"},
    "stats_worker_idle": {"en": "idle", "zh": "空闲"},
    "stats_worker_running": {"en": "running job {jobs}", "zh": "正在运行任务 {jobs}"},
    "stats_worker_no_device": {"en": "no device yet", "zh": "尚未选定设备"},
    "stats_worker_local": {"en": "local", "zh": "本机"},
    "stats_worker_remote": {"en": "remote", "zh": "远程"},
    "stats_workers_none": {"en": "No worker is serving now.", "zh": "当前没有工作进程在服务。"},
    "stats_workers_more": {"en": "… and {n} more (artbot workers lists them all)",
                           "zh": "……还有 {n} 个（artbot workers 可列出全部）"},
    "nobody_yet": {"en": "nobody yet", "zh": "暂无"},
    "field_seed": {"en": "Seed", "zh": "种子"},
    "field_seeds": {"en": "Seeds", "zh": "种子"},
    "field_model": {"en": "Model", "zh": "模型"},
    "field_steps": {"en": "Steps", "zh": "步数"},
    "field_sampler": {"en": "Sampler", "zh": "采样器"},
    "field_guidance": {"en": "Guidance", "zh": "引导强度"},
    "field_loras": {"en": "LoRAs", "zh": "LoRA"},
    "field_note": {"en": "Note", "zh": "说明"},
    "field_time": {"en": "Time", "zh": "耗时"},
    "field_parent": {"en": "Variation of", "zh": "变体来源"},
    "field_strength": {"en": "Strength", "zh": "强度"},
    "button_reroll": {"en": "Reroll", "zh": "重画"},
    "button_vary_subtle": {"en": "Vary (subtle)", "zh": "轻微变体"},
    "button_vary_strong": {"en": "Vary (strong)", "zh": "强烈变体"},
    "button_remix": {"en": "Remix", "zh": "改写"},
    "button_delete": {"en": "Delete", "zh": "删除"},
    "button_cancel": {"en": "Cancel", "zh": "取消"},
    "button_previous": {"en": "Previous", "zh": "上一页"},
    "button_next": {"en": "Next", "zh": "下一页"},
    # Image tools (issue 16): the buttons under a result, what a tool's result says it is,
    # /describe's answer, and the ✉️ reaction's private message.
    "button_upscale": {"en": "Upscale ×{n}", "zh": "放大 ×{n}"},
    "button_zoom": {"en": "Zoom out {n}×", "zh": "缩小 {n}×"},
    "button_draw": {"en": "Draw {n}", "zh": "画第 {n} 个"},
    "origin_upscale": {"en": "Upscaled ×{n} from job {job}", "zh": "由任务 {job} 放大 ×{n}"},
    "origin_zoom": {"en": "Zoomed out {n}× from job {job}", "zh": "由任务 {job} 缩小 {n}×"},
    "origin_pan": {"en": "Panned {arrow} from job {job}", "zh": "由任务 {job} 向 {arrow} 扩展"},
    "origin_outpaint": {"en": "Outpainted from job {job}", "zh": "由任务 {job} 扩展画面"},
    "origin_blend": {"en": "Blend of {n} images", "zh": "{n} 张图片的融合"},
    "field_from": {"en": "From", "zh": "来源"},
    "describe_heading": {"en": "(describe an image)", "zh": "（描述图片）"},
    "describe_result": {"en": "Prompts for this image (press a number to draw it):",
                        "zh": "这张图片的提示词（按编号按钮即可画出）："},
    "describe_by": {"en": "Described by {model}.", "zh": "由 {model} 描述。"},
    "describe_none": {"en": "No prompts could be found for this image.",
                      "zh": "没能为这张图片找到提示词。"},
    "describe_needs_source": {
        "en": "Give an image to describe: attach one, or name an earlier job (its id or message link).",
        "zh": "请提供要描述的图片：上传一张，或给出之前作品的编号或消息链接。",
    },
    "describe_no_prompt": {"en": "Job {job} has no prompt number {n}.", "zh": "任务 {job} 没有第 {n} 个提示词。"},
    "draw_one_style": {"en": "Give one style reference: a style image or a preset, not both.",
                       "zh": "请只给一种风格参考：风格图片或预设，不要同时给。"},
    "dm_title": {"en": "Job {job}", "zh": "任务 {job}"},
    "dm_closed": {
        "en": "{mention}, I cannot send you private messages (your privacy settings block them); "
              "/job {job} shows its details here.",
        "zh": "{mention}，我无法给你发私信（你的隐私设置不允许）；可以用 /job {job} 在这里查看详情。",
    },
    "remix_title": {"en": "Remix: edit the prompt", "zh": "改写：编辑提示词"},
    "remix_label": {"en": "Prompt", "zh": "提示词"},
    "variation": {"en": "(variation)", "zh": "（变体）"},
    "help_title": {"en": "artbot", "zh": "artbot"},
    "help_text": {
        "en": (
            "**/draw** `prompt` draws images; add `count` for a 2×2 grid, `seed` to repeat one.\n"
            "**/vary** an uploaded image or an earlier job (id or message link), subtle or strong.\n"
            "**/stylize** an image like a style image, an admin's preset, or a style in words; "
            "**/draw** `style` draws in the style of an image (or `style_preset`).\n"
            "**/blend** 2–5 images into one; **/describe** an image into prompts to draw from.\n"
            "**/history** your recent images with prompts, seeds and links (`export`: all of "
            "yours as a file); **/forget** deletes your jobs and images.\n"
            "**/job** `id` brings an old result back with working buttons.\n"
            "**/queue** your queued and running jobs (`cancel` stops one); **/quota** the images "
            "you have left today.\n"
            "While a job waits or runs, ✖️ Cancel (or a ❌ reaction) stops it.\n\n"
            "Under each result: 🔁 reroll with a new seed, 🎲 subtle and 🌀 strong variations, "
            "✏️ remix (edit the prompt), 🗑️ delete. On a grid, V1–V4 vary one image and U1–U4 "
            "show one at full size. On one image: Upscale ×2 / ×4, 🔍 zoom out, ⬅️ ➡️ ⬆️ ⬇️ pan "
            "(where the model can). Reactions work too: 🔁 reroll, 🎲 vary, 🗑️ delete, "
            "✉️ the job's details in a private message."
        ),
        "zh": (
            "**/draw** `提示词` 画图；加上 `数量` 生成 2×2 网格，用 `种子` 重现同一张图。\n"
            "**/vary** 对上传的图片或之前的作品（编号或消息链接）生成轻微或强烈的变体。\n"
            "**/stylize** 按风格图片、管理员的预设或文字描述为图片换风格；"
            "**/draw** 的 `风格` 按一张图片的风格画图（或用 `风格预设`）。\n"
            "**/blend** 把 2–5 张图片融合成一张；**/describe** 把图片变成可以画图的提示词。\n"
            "**/history** 查看你最近的作品、提示词、种子和链接（`导出`：把你的全部记录作为文件发给你）；"
            "**/forget** 删除你的任务和图片。\n"
            "**/job** `编号` 找回旧作品，按钮依然可用。\n"
            "**/queue** 查看你排队中和进行中的任务（`取消` 可停止其中一个）；**/quota** 查看你今天剩余的图片额度。\n"
            "任务排队或进行时，点 ✖️ 取消（或用 ❌ 回应）即可停止。\n\n"
            "每个结果下方：🔁 换种子重画，🎲 轻微变体，🌀 强烈变体，✏️ 改写提示词，🗑️ 删除。"
            "网格图上 V1–V4 对单张生成变体，U1–U4 单独显示一张。单张图上：放大 ×2 / ×4，🔍 缩小，"
            "⬅️ ➡️ ⬆️ ⬇️ 扩展画面（模型支持时）。也可以用表情回应：🔁 重画，🎲 变体，🗑️ 删除，"
            "✉️ 私信发送任务详情。"
        ),
    },
}


def language(locale: discord.Locale | str | None) -> str:
    """'zh' for Chinese locales (simplified and traditional fall back to it), else 'en'."""
    value = getattr(locale, "value", locale) or ""
    return "zh" if str(value).lower().startswith("zh") else "en"


def has_text(key: str) -> bool:
    return key in MESSAGES


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


def choice_text(text: str, locale: discord.Locale | str | None) -> str:
    """An autocomplete choice such as "Landscape 1216×832 (19:13)" in the user's language
    (autocomplete answers are not translated at sync time like fixed choices)."""
    if str(locale) != str(discord.Locale.chinese):
        return text
    word, _, rest = text.partition(" ")
    return f"{COMMAND_ZH[word]} {rest}" if word in COMMAND_ZH and rest else text
