"""Screenshot of the chat page for the README (docs/chat-page.png), in headless Chromium.

The page and its files are the package's own (server/page.py); the API behind them is a
scripted stand-in that streams fixed answers in the daemon's wire format, because the machines
this runs on have no trained model (the fixture and synthetic models answer with noise).

    python tools/chat_page_screenshot.py [--out docs/chat-page.png] [--dark]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from neuro_bitnet.server.config import ServerConfig
from neuro_bitnet.server.page import page_routes

MODEL = "bitnet-b1.58-2b-4t"
ANSWERS = [
    ("A ternary neural network stores every weight as one of three values: **-1, 0 or +1** [1]. "
     "BitNet b1.58 trains that way from the start, so:\n\n"
     "- a weight needs about 1.58 bits instead of 16;\n"
     "- matrix products become additions and subtractions;\n"
     "- the model runs fast on an ordinary CPU [1]."),
    ("Start `neuro serve`, then use the official client:\n\n"
     "```python\nfrom openai import OpenAI\n\n"
     "client = OpenAI(base_url=\"http://127.0.0.1:11435/v1\", api_key=\"-\")\n"
     "reply = client.chat.completions.create(\n"
     "    model=\"default\", messages=[{\"role\": \"user\", \"content\": \"Hi\"}])\n"
     "print(reply.choices[0].message.content)\n```"),
]
HITS = [{"path": "docs/bitnet.md", "location": "lines 1-12", "heading": "BitNet b1.58",
         "text": "BitNet b1.58 constrains every weight to -1, 0 or +1 (1.58 bits) and quantizes activations "
                 "to 8 bits, so inference needs integer additions instead of floating-point multiplications.",
         "score": 0.03, "similarity": 0.8, "vector_rank": 1, "lexical_rank": 1, "chunk_id": 1}]


def scripted_app() -> Starlette:
    turns = {"n": 0}

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": MODEL, "ctx_size": 4096, "auto_translate": False,
                             "search": True, "embeddings": True})

    async def search(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": HITS})

    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        answer = ANSWERS[min(turns["n"], len(ANSWERS) - 1)]
        turns["n"] += 1

        async def events():
            words = answer.split(" ")
            for i, word in enumerate(words):
                piece = word if i == 0 else " " + word
                yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': piece}}]})}\n\n"
                await asyncio.sleep(0.01)
            yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n"
            n = len(words) + answer.count("\n")
            prompt = 40 + 30 * len(body["messages"])
            usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
            timings = {"predicted_n": n, "predicted_per_second": 27.4}
            yield f"data: {json.dumps({'choices': [], 'usage': usage, 'timings': timings})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    routes = [Route("/health", health), Route("/v1/search", search, methods=["POST"]),
              Route("/v1/chat/completions", chat, methods=["POST"]), *page_routes(ServerConfig())]
    return Starlette(routes=routes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/chat-page.png"))
    parser.add_argument("--dark", action="store_true", help="emulate prefers-color-scheme: dark")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=860)
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(scripted_app(), log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": args.width, "height": args.height, "deviceScaleFactor": 1, "mobile": False})
        if args.dark:
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                                   {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.execute_script("return document.body.dataset.ready") == "true")
        for question in ("What is a ternary neural network?", "How do I call the daemon from Python?"):
            box = driver.find_element(By.ID, "prompt")
            box.send_keys(question + Keys.ENTER)
            wait.until(lambda d: d.execute_script(
                "const a = document.querySelectorAll('.turn.assistant'); return a.length && "
                "[...a].every(x => x.dataset.state === 'done')"))
            if question.startswith("What"):
                driver.find_element(By.ID, "use-docs").click()  # the second answer without documents
        driver.execute_script("document.activeElement.blur()")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
        print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    finally:
        driver.quit()
        server.should_exit = True


if __name__ == "__main__":
    main()
