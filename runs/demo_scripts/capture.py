# Demo step of the visual-batch pipeline: a real screenshot, with headless Chromium, of a small
# local page drawn for one page and viewport. `change` alters the page the way a regression
# would: "tweak" tints the header's logo text slightly (a minor difference), "banner" adds a
# sale banner (a major one). Run as: python3 -c <this file's text> <page> <viewport> <change>
import json
import os
import shutil
import subprocess
import sys
import tempfile

page, viewport, change = sys.argv[1], sys.argv[2], sys.argv[3]
width, height = {"desktop": (1280, 800), "phone": (390, 844)}[viewport]
browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(b)), None)
if browser is None:
    print("chromium is not installed on this worker, so there is nothing to screenshot. "
          "Install it (Debian: apt-get install chromium) and run again.", file=sys.stderr)
    sys.exit(3)

titles = {"home": "Ship faster with Switchyard", "pricing": "Simple, honest pricing",
          "docs": "Documentation"}
logo = "#dce6fa" if change == "tweak" else "#ffffff"
banner = ('<div class="banner">Spring sale: 30% off every plan this week only</div>'
          if change == "banner" else "")
cards = "".join(
    f'<div class="card"><h3>{name}</h3><p class="price">{price}</p><a class="btn">Choose</a></div>'
    for name, price in (("Starter", "$0"), ("Team", "$29"), ("Business", "$99")))
bodies = {
    "home": "<p>Launch, watch and control every run from one place.</p>"
            "<a class='btn'>Get started</a>",
    "pricing": f"<div class='grid'>{cards}</div>",
    "docs": "<ul>" + "".join(f"<li>Chapter {i}: topic {i}</li>" for i in range(1, 9)) + "</ul>",
}
style = (
    "body { margin: 0; font: 16px/1.5 sans-serif; color: #1b1f24; background: #f6f7f9; }"
    f"header {{ background: #11161d; color: {logo}; padding: 14px 24px; font-weight: 700; }}"
    "main { padding: 32px 24px; } h1 { margin-top: 0; }"
    ".banner { background: #d7191c; color: #fff; padding: 16px 24px; font-weight: 700; }"
    ".btn { display: inline-block; background: #2f5bd3; color: #fff; padding: 10px 18px;"
    " border-radius: 6px; }"
    ".grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr));"
    " gap: 16px; }"
    ".card { background: #fff; border: 1px solid #d8dde3; border-radius: 8px; padding: 16px; }"
    ".price { font-size: 1.6rem; font-weight: 700; }"
)
html = (f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head>"
        f"<body><header>Switchyard</header>{banner}<main><h1>{titles[page]}</h1>"
        f"{bodies[page]}</main></body></html>")
os.makedirs("shots", exist_ok=True)
with open("page.html", "w") as f:
    f.write(html)
shot = os.path.abspath(f"shots/{page}-{viewport}.png")
# Chromium puts unix sockets in its profile and temporary directories, and a socket path over
# 107 bytes makes it abort: a deep working directory is too long, so both go to a short one.
profile = None
# mkdtemp makes a private (0700), unpredictable directory, so a shared /tmp is safe here.
for base in ("/tmp", "/var/tmp", os.getcwd()):  # noqa: S108
    try:
        profile = tempfile.mkdtemp(prefix="sy-chromium-", dir=base)
        break
    except OSError:
        continue
print(f"capturing {page} at {viewport} ({width}x{height}) with {browser}", flush=True)
done = subprocess.run(
    [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
     "--disable-background-networking", "--disable-component-update", "--disable-sync",
     "--no-first-run", "--disable-dev-shm-usage", "--force-device-scale-factor=1",
     f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={shot}",
     "file://" + os.path.abspath("page.html")],
    timeout=90, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    env={**os.environ, "HOME": profile, "TMPDIR": profile},
)
if done.returncode != 0 or not os.path.exists(shot):
    print(f"chromium failed (exit {done.returncode}):", file=sys.stderr)
    print("\n".join(done.stderr.splitlines()[-15:]), file=sys.stderr)
    sys.exit(1)
shutil.rmtree(profile, ignore_errors=True)
with open("result.json", "w") as f:
    json.dump({"page": page, "viewport": viewport, "change": change}, f)
print(f"saved shots/{page}-{viewport}.png", flush=True)
