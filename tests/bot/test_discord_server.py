"""Tests of the fake Discord server, driving a real, minimal discord.py bot against it."""
from __future__ import annotations

import asyncio
import hashlib
import io
import struct
import zlib

import aiohttp
import discord
import pytest
import pytest_asyncio
from discord import app_commands
from discord.ext import commands

from tests.bot.discord_server import DiscordServer, Permissions, redirect_discord, running_client


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


PNG = tiny_png()


async def eventually(predicate, timeout: float = 3.0):
    """Poll bot-side state (the server cannot see inside the bot)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (result := predicate()):
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)
    return result


# --------------------------------------------------------------------------- a minimal bot

class Dice(discord.ui.DynamicItem[discord.ui.Button], template=r"dice:(?P<sides>\d+)"):
    def __init__(self, sides: int):
        super().__init__(discord.ui.Button(label=f"d{sides}", custom_id=f"dice:{sides}", emoji="🎲",
                                           style=discord.ButtonStyle.primary))
        self.sides = sides

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(int(match["sides"]))

    async def callback(self, interaction: discord.Interaction):
        await interaction.response.edit_message(content=f"d{self.sides} rolled by {interaction.user.name}")


class Feedback(discord.ui.Modal, title="Feedback"):
    text = discord.ui.TextInput(label="Your feedback", custom_id="feedback:text", max_length=200)

    async def on_submit(self, interaction: discord.Interaction):
        await interaction.response.send_message(f"thanks: {self.text.value}", ephemeral=True)


class Pick(discord.ui.View):
    @discord.ui.select(custom_id="pick", options=[discord.SelectOption(label=x, value=x) for x in "abc"])
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select):
        await interaction.response.send_message(f"picked {select.values[0]}")


class Recorder:
    def __init__(self):
        self.errors: list[Exception] = []
        self.reactions: list[discord.RawReactionActionEvent] = []
        self.release = asyncio.Event()


def build_bot(rec: Recorder) -> commands.Bot:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05,
                       help_command=None)
    tree = bot.tree

    async def setup_hook():
        bot.add_dynamic_items(Dice)
    bot.setup_hook = setup_hook

    @tree.error
    async def on_error(interaction, error):
        rec.errors.append(getattr(error, "original", error))

    @bot.event
    async def on_raw_reaction_add(payload):
        rec.reactions.append(payload)

    @tree.command(description="Draw a picture")
    @app_commands.describe(prompt="what to draw")
    async def draw(interaction: discord.Interaction, prompt: str, count: app_commands.Range[int, 1, 4] = 1):
        await interaction.response.defer()
        await interaction.followup.send(f"{prompt} x{count}", file=discord.File(io.BytesIO(PNG), "art.png"))

    @tree.command(description="Look at an image")
    async def inspect(interaction: discord.Interaction, image: discord.Attachment):
        data = await image.read()
        await interaction.response.send_message(f"{image.filename} {len(data)} {hashlib.sha1(data).hexdigest()}",
                                                file=discord.File(io.BytesIO(data), "echo.png"))

    @tree.command(description="Defers, then answers when released")
    async def slow(interaction: discord.Interaction):
        await interaction.response.defer(ephemeral=True)
        await rec.release.wait()
        await interaction.followup.send("late")

    @tree.command(description="Shows progress by editing its response")
    async def progress(interaction: discord.Interaction):
        await interaction.response.defer()
        await interaction.edit_original_response(content="step 1")
        await interaction.edit_original_response(content="done", attachments=[discord.File(io.BytesIO(PNG), "final.png")],
                                                 embed=discord.Embed(title="Result").set_image(url="attachment://final.png"))

    @tree.command(description="Does not answer")
    async def noop(interaction: discord.Interaction):
        pass

    @tree.command(description="Post a dice button")
    async def dice(interaction: discord.Interaction, sides: int = 6):
        view = discord.ui.View(timeout=None)
        view.add_item(Dice(sides))
        await interaction.channel.send("Roll the dice", view=view)
        await interaction.response.send_message("posted", ephemeral=True)

    @tree.command(description="Give feedback")
    async def feedback(interaction: discord.Interaction):
        await interaction.response.send_modal(Feedback(custom_id="feedback"))

    @tree.command(description="Pick a letter")
    async def pick(interaction: discord.Interaction):
        await interaction.response.send_message("pick one", view=Pick())

    art = app_commands.Group(name="art", description="Art settings")

    @art.command(description="Set the style")
    async def style(interaction: discord.Interaction, name: str):
        await interaction.response.send_message(f"style set to {name}")

    @style.autocomplete("name")
    async def style_complete(interaction: discord.Interaction, current: str):
        return [app_commands.Choice(name=s, value=s) for s in ("impressionism", "cubism", "surrealism")
                if s.startswith(current)]

    tree.add_command(art)
    return bot


@pytest_asyncio.fixture
async def server():
    async with DiscordServer() as srv:
        yield srv


@pytest_asyncio.fixture
async def bot(server):
    rec = Recorder()
    client = build_bot(rec)
    client.rec = rec
    async with running_client(server, client):
        await client.tree.sync()
        yield client


# --------------------------------------------------------------------------- tests

@pytest.mark.asyncio
async def test_login_and_sync(server, bot):
    draw = server.command("draw")
    assert draw is not None and draw["description"] == "Draw a picture"
    assert [(o["name"], o["type"], o.get("required", False)) for o in draw["options"]] == [
        ("prompt", 3, True), ("count", 4, False)]
    assert draw["options"][1]["min_value"] == 1 and draw["options"][1]["max_value"] == 4
    assert server.command_syncs[-1][0] is None and "art" in server.command_syncs[-1][1]
    assert bot.user.id == server.bot_user.id and bot.application_id == server.application_id
    assert bot.get_guild(server.guild.id).get_channel(server.general.id).name == "general"
    # a guild sync is stored apart from the global commands
    bot.tree.copy_global_to(guild=discord.Object(server.guild.id))
    await bot.tree.sync(guild=discord.Object(server.guild.id))
    assert server.command("draw", server.guild.id)["guild_id"] == str(server.guild.id)
    ix = await server.slash_command(server.alice, server.general, "pick")
    assert ix.payload["data"]["guild_id"] == str(server.guild.id)  # matches the guild copy
    await ix.wait_response()
    server.assert_clean()


@pytest.mark.asyncio
async def test_defer_then_followup_with_png(server, bot):
    ix = await server.slash_command(server.alice, server.general, "draw", {"prompt": "a red fox", "count": 2})
    assert (await ix.wait_response())["type"] == 5
    msg = await ix.wait_followup()
    assert msg.content == "a red fox x2" and not msg.ephemeral
    assert msg.id == ix.original_id  # the first followup replaced the "thinking" message
    att = msg.attachments[0]
    assert (att["filename"], att["content_type"], att["width"], att["height"]) == ("art.png", "image/png", 3, 2)
    assert msg.attachment_bytes("art.png") == PNG
    async with aiohttp.ClientSession() as http:  # served like Discord's CDN
        async with http.get(att["url"]) as resp:
            assert resp.status == 200 and await resp.read() == PNG
    assert msg.payload["interaction_metadata"]["user"]["id"] == str(server.alice.id)
    server.assert_clean()


@pytest.mark.asyncio
async def test_attachment_option_is_readable_by_the_bot(server, bot):
    ix = await server.slash_command(server.bob, server.art, "inspect", attachments={"image": (PNG, "in.png", "image/png")})
    await ix.wait_response()
    assert ix.original.content == f"in.png {len(PNG)} {hashlib.sha1(PNG).hexdigest()}"
    resolved = ix.payload["data"]["resolved"]["attachments"]
    assert list(resolved.values())[0]["width"] == 3
    assert ix.original.attachment_bytes("echo.png") == PNG  # a multipart interaction callback
    server.assert_clean()


@pytest.mark.asyncio
async def test_edits_of_the_original_response_are_recorded(server, bot):
    ix = await server.slash_command(server.alice, server.general, "progress")
    msg = await ix.wait_original(lambda m: m.content == "done")
    assert [e.payload["content"] for e in msg.edits] == ["step 1", "done"]
    assert msg.edit_times == sorted(msg.edit_times) and len(msg.edit_times) == 2
    assert msg.edits[0].payload["edited_timestamp"] is None  # filling the deferred response
    assert msg.payload["edited_timestamp"] is not None
    assert msg.attachment_bytes("final.png") == PNG
    assert msg.embeds[0]["image"]["url"] == msg.attachments[0]["url"]  # attachment:// resolved
    server.assert_clean()


@pytest.mark.asyncio
async def test_driver_refuses_what_discord_would_not_send(server, bot):
    with pytest.raises(LookupError):
        await server.slash_command(server.alice, server.general, "nope")
    with pytest.raises(ValueError):
        await server.slash_command(server.alice, server.general, "draw", {"count": 2})  # prompt missing
    with pytest.raises(ValueError):
        await server.slash_command(server.alice, server.general, "draw", {"prompt": "x", "size": 2})
    with pytest.raises(TypeError):
        await server.slash_command(server.alice, server.general, "draw", {"prompt": "x", "count": "2"})
    with pytest.raises(ValueError):
        await server.slash_command(server.alice, server.general, "draw", {"prompt": "x", "count": 9})
    with pytest.raises(ValueError):
        await server.slash_command(server.alice, server.general, "art")  # needs a subcommand
    assert not server.interactions


@pytest.mark.asyncio
async def test_subcommand_and_autocomplete(server, bot):
    choices = await server.autocomplete(server.alice, server.general, "art style", {"name": "cu"}, focused="name")
    assert choices == [{"name": "cubism", "value": "cubism"}]
    ix = await server.slash_command(server.alice, server.general, "art style", {"name": "cubism"})
    await ix.wait_response()
    assert ix.payload["data"]["options"][0]["type"] == 1
    assert ix.original.content == "style set to cubism"
    server.assert_clean()


@pytest.mark.asyncio
async def test_dynamic_item_button(server, bot):
    ix = await server.slash_command(server.alice, server.general, "dice", {"sides": 20})
    await ix.wait_response()
    assert ix.original.ephemeral and ix.original.content == "posted"
    post = await server.wait_for_message(server.general.id, lambda m: m.content == "Roll the dice")
    button = post.buttons[0]
    assert (button["custom_id"], button["label"], button["emoji"]["name"], button["style"]) == ("dice:20", "d20", "🎲", 1)
    press = await server.press_button(server.bob, post, "dice:20")
    assert (await press.wait_response())["type"] == 7
    assert post.content == "d20 rolled by bob" and len(post.edits) == 1
    assert post.payload["edited_timestamp"] is not None
    server.assert_clean()


@pytest.mark.asyncio
async def test_string_select(server, bot):
    ix = await server.slash_command(server.alice, server.general, "pick")
    await ix.wait_response()
    with pytest.raises(ValueError):
        await server.select(server.alice, ix.original, "pick", ["z"])
    sel = await server.select(server.alice, ix.original, "pick", ["b"])
    await sel.wait_response()
    assert sel.original.content == "picked b"
    server.assert_clean()


@pytest.mark.asyncio
async def test_reaction_reaches_on_raw_reaction_add(server, bot):
    ix = await server.slash_command(server.alice, server.general, "dice")
    post = await server.wait_for_message(server.general.id, lambda m: m.content == "Roll the dice")
    await ix.wait_response()
    await server.add_reaction(server.alice, post, "🎲")
    payload = (await eventually(lambda: bot.rec.reactions))[0]
    assert (payload.user_id, payload.message_id, payload.channel_id) == (server.alice.id, post.id, server.general.id)
    assert payload.emoji.name == "🎲" and payload.member.id == server.alice.id
    assert payload.message_author_id == server.bot_user.id
    assert post.reactions == {"🎲": [server.alice.id]}
    # and the bot's own reaction goes through REST
    await bot.get_channel(server.general.id).get_partial_message(post.id).add_reaction("✅")
    assert post.reactions["✅"] == [server.bot_user.id]
    server.assert_clean()


@pytest.mark.asyncio
async def test_modal_round_trip(server, bot):
    ix = await server.slash_command(server.alice, server.general, "feedback")
    assert (await ix.wait_response())["type"] == 9
    assert ix.modal["title"] == "Feedback"
    with pytest.raises(ValueError):
        await server.submit_modal(server.alice, ix, None, {"other": "x"})
    with pytest.raises(ValueError):
        await server.submit_modal(server.alice, ix, "not-this-modal", {"feedback:text": "x"})
    sub = await server.submit_modal(server.alice, ix, "feedback", {"feedback:text": "lovely"})
    await sub.wait_response()
    assert sub.original.content == "thanks: lovely" and sub.original.ephemeral
    assert sub.original not in server.messages_in(server.general)
    assert sub.original.payload["interaction_metadata"]["triggering_interaction_metadata"]["id"] == str(ix.id)
    server.assert_clean()


@pytest.mark.asyncio
async def test_acknowledging_after_three_seconds_is_refused(server, bot):
    ix = await server.slash_command(server.alice, server.general, "draw", {"prompt": "late"}, age=3.2)
    await eventually(lambda: bot.rec.errors)
    assert isinstance(bot.rec.errors[0], discord.NotFound) and bot.rec.errors[0].code == 10062
    assert ix.callback is None and ix.rejected[0]["code"] == 10062
    with pytest.raises(AssertionError):
        server.assert_clean()
    server.assert_clean(allow_codes={10062})


@pytest.mark.asyncio
async def test_raw_interaction_rules(server, bot):
    ix = await server.slash_command(server.alice, server.general, "noop")
    base, app = server.api_base, server.application_id
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/webhooks/{app}/{ix.token}?wait=1", json={"content": "early"}) as r:
            assert r.status == 404 and (await r.json())["code"] == 10015
        async with http.post(f"{base}/interactions/{ix.id}/{ix.token}/callback?with_response=1",
                             json={"type": 5}) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            assert all(h in r.headers for h in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
                                                "X-RateLimit-Reset-After", "X-RateLimit-Bucket"))
            body = await r.json()
            assert body["interaction"]["id"] == str(ix.id) and body["interaction"]["response_message_loading"]
        async with http.post(f"{base}/interactions/{ix.id}/{ix.token}/callback", json={"type": 5}) as r:
            assert r.status == 400 and (await r.json())["code"] == 40060
        async with http.patch(f"{base}/webhooks/{app}/{ix.token}/messages/@original", json={"content": "v1"}) as r:
            assert r.status == 200 and (await r.json())["content"] == "v1"
        async with http.patch(f"{base}/webhooks/{app}/{ix.token}/messages/@original", json={"content": 5}) as r:
            assert r.status == 400 and (await r.json())["code"] == 50035  # breaks the OpenAPI schema
        server.expire_interaction(ix)
        async with http.post(f"{base}/webhooks/{app}/{ix.token}", json={"content": "late"}) as r:
            assert r.status == 404 and (await r.json())["code"] == 10015
        async with http.get(f"{base}/users/@me") as r:
            assert r.status == 401 and await r.json() == {"message": "401: Unauthorized", "code": 0}
        async with http.get(f"{base}/nope", headers={"Authorization": f"Bot {server.token}"}) as r:
            assert r.status == 404 and r.headers["Content-Type"] == "application/json"
    assert [e.split(":")[0] for e in server.protocol_errors] == [
        f"PATCH /api/v10/webhooks/{app}/{ix.token}/messages/@original", "unknown route GET /api/v10/nope"]
    assert [r.body["code"] for r in server.api_errors] == [10015, 40060, 50035, 10015, 0]
    assert ix.original.content == "v1" and [e.payload["content"] for e in ix.original.edits] == ["v1"]


@pytest.mark.asyncio
async def test_injected_429_on_followup_is_retried(server, bot):
    server.inject_rate_limit("POST", r"^/webhooks/", count=1, retry_after=0.2)
    ix = await server.slash_command(server.alice, server.general, "draw", {"prompt": "retry"})
    msg = await ix.wait_followup()
    assert msg.content == "retry x1" and msg.attachment_bytes() == PNG
    posts = server.requests_to("POST", r"^/webhooks/")
    assert [r.status for r in posts] == [429, 200] and server.rate_limit_hits == posts[:1]
    assert posts[1].at - posts[0].at >= 0.2
    server.assert_clean()


@pytest.mark.asyncio
async def test_wrong_token_is_a_login_failure(server):
    client = discord.Client(intents=discord.Intents.default())
    with pytest.raises(discord.LoginFailure):
        async with running_client(server, client, token="wrong-token"):
            pass
    assert server.api_errors[0].status == 401 and server.identify_count == 0
    server.assert_clean(allow_codes={0})


@pytest.mark.asyncio
async def test_expired_token_makes_followup_fail(server, bot):
    ix = await server.slash_command(server.alice, server.general, "slow")
    assert (await ix.wait_response())["data"]["flags"] == 64
    server.expire_interaction(ix)
    bot.rec.release.set()
    await eventually(lambda: bot.rec.errors)
    assert isinstance(bot.rec.errors[0], discord.NotFound) and bot.rec.errors[0].code == 10015
    assert ix.original.loading and not ix.followup_ids
    server.assert_clean(allow_codes={10015})


@pytest.mark.asyncio
async def test_bot_restart_keeps_messages_and_commands(server):
    rec = Recorder()
    first = build_bot(rec)
    async with running_client(server, first):
        await first.tree.sync()
        ix = await server.slash_command(server.alice, server.general, "dice", {"sides": 8})
        await ix.wait_response()
    post = await server.wait_for_message(server.general.id, lambda m: m.content == "Roll the dice")
    second = build_bot(Recorder())
    async with running_client(server, second):
        fetched = await second.get_channel(server.general.id).fetch_message(post.id)
        assert fetched.content == "Roll the dice" and fetched.components[0].children[0].custom_id == "dice:8"
        press = await server.press_button(server.bob, post, "dice:8")  # the persistent dynamic item
        await press.wait_response()
        assert post.content == "d8 rolled by bob"
    assert server.identify_count == 2 and len(server.command_syncs) == 1
    server.assert_clean()


@pytest.mark.asyncio
async def test_reconnect_resumes_the_session(server, bot):
    async def no_identify_delay(shard_id, *, initial=False):
        pass  # discord.py waits 5 s before every re-IDENTIFY (not before a RESUME)
    bot.before_identify_hook = no_identify_delay
    await server.request_reconnect()
    assert server.resume_count == 1 and server.identify_count == 1
    ix = await server.slash_command(server.alice, server.general, "pick")
    await ix.wait_response()
    await server.request_reconnect(resumable=False)  # INVALID_SESSION: the bot identifies again
    assert server.identify_count == 2
    ix = await server.slash_command(server.alice, server.general, "pick")
    await ix.wait_response()
    server.assert_clean()


@pytest.mark.asyncio
async def test_invalid_bot_body_fails_loudly(server, bot):
    with pytest.raises(discord.HTTPException) as info:
        await bot.get_channel(server.general.id).send("x" * 2001)
    assert info.value.status == 400 and info.value.code == 50035
    assert "content" in server.protocol_errors[0]
    with pytest.raises(AssertionError, match="content"):
        server.assert_clean()


@pytest.mark.asyncio
async def test_channel_send_needs_permissions(server, bot):
    server.bot_role.permissions = server.guild.roles[server.guild.id].permissions = Permissions.VIEW_CHANNEL
    with pytest.raises(discord.Forbidden):
        await bot.get_channel(server.general.id).send("hi")
    server.assert_clean(allow_codes={50013})


@pytest.mark.asyncio
async def test_gateway_compression_and_bad_token(server):
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.gateway_url + "?v=10&encoding=json&compress=zlib-stream") as ws:
            frame = await ws.receive_bytes()
            assert frame.endswith(b"\x00\x00\xff\xff")
            hello = zlib.decompressobj().decompress(frame)
            assert b'"op":10' in hello
            await ws.send_json({"op": 2, "d": {"token": "bad", "intents": 513, "properties": {}}})
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4004
        async with http.ws_connect(server.gateway_url + "?v=10&encoding=json") as ws:
            assert (await ws.receive_json())["op"] == 10
            await ws.send_json({"op": 1, "d": None})
            assert (await ws.receive_json())["op"] == 11
    server.assert_clean()


@pytest.mark.asyncio
async def test_fake_payloads_match_openapi(server, bot):
    api = server.openapi
    ix = await server.slash_command(server.alice, server.general, "pick")
    await ix.wait_response()
    checks = [("MessageResponse", ix.original.payload), ("UserResponse", server.alice.user.payload()),
              ("GuildMemberResponse", server.alice.payload()), ("GuildChannelResponse", server.art.payload())]
    checks += [("GuildRoleResponse", r.payload()) for r in server.guild.roles.values()]
    checks += [("ApplicationCommandResponse", c) for c in server.commands()]
    for name, payload in checks:
        assert api.errors(api.schema(name), payload) == [], name
    server.assert_clean()


@pytest.mark.asyncio
async def test_redirect_is_restored(server):
    before = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    async with redirect_discord(server):
        assert discord.http.Route.BASE == server.api_base
    assert (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == before


@pytest.mark.asyncio
async def test_gateway_resume_replays_missed_events(server):
    async def connect(http):
        ws = await http.ws_connect(server.gateway_url + "?v=10&encoding=json")
        assert (await ws.receive_json())["op"] == 10
        return ws

    async with aiohttp.ClientSession() as http:
        ws = await connect(http)
        await ws.send_json({"op": 2, "d": {"token": server.token, "intents": 513, "properties": {"os": "linux"}}})
        ready = await ws.receive_json()
        assert (ready["t"], ready["s"]) == ("READY", 1) and ready["d"]["application"]["id"] == str(server.application_id)
        guild = (await ws.receive_json())["d"]
        assert [m["user"]["id"] for m in guild["members"]] == [str(server.bot_user.id)]  # no presences intent
        assert guild["member_count"] == 4
        await ws.close(code=4000)  # not a clean close: the session can be resumed
        await server.wait_for(lambda: server.session.connection is None)
        await server.dispatch("TYPING_START", {"channel_id": str(server.general.id), "user_id": str(server.bob.id),
                                               "timestamp": 0})
        ws = await connect(http)
        await ws.send_json({"op": 6, "d": {"token": server.token, "session_id": ready["d"]["session_id"], "seq": 2}})
        assert [(m["t"], m["s"]) for m in [await ws.receive_json(), await ws.receive_json()]] == [
            ("TYPING_START", 3), ("RESUMED", 4)]
        await ws.close()  # a clean close ends the session
        ws = await connect(http)
        await ws.send_json({"op": 6, "d": {"token": server.token, "session_id": ready["d"]["session_id"], "seq": 4}})
        assert await ws.receive_json() == {"op": 9, "d": False}
        await ws.close()
    server.assert_clean()
