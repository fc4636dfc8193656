"""What the service knows about each platform: its site, its download headers, its tier."""

from __future__ import annotations

from scraper_service.models import Headers, Platform

# The domain given to the web search engine's ``site:`` filter.
SITE_DOMAINS: dict[Platform, str] = {
    Platform.PINTEREST: "pinterest.com",
    Platform.REDDIT: "reddit.com",
    Platform.INSTAGRAM: "instagram.com",
}

# Image CDNs of these platforms refuse or degrade hot-linked downloads that carry no
# Referer from the platform itself, so the downloader is told what to send.
_DOWNLOAD_HEADERS: dict[Platform, Headers] = {
    Platform.PINTEREST: (("Referer", "https://www.pinterest.com/"), ("X-Pinterest-Source", "web")),
    Platform.REDDIT: (("Referer", "https://www.reddit.com/"),),
    Platform.INSTAGRAM: (("Referer", "https://www.instagram.com/"),),
}

# Tier 1 holds the platforms with the most (and most reliably reachable) tattoo imagery;
# OTHER sits there too so a private catalog with no platforms answers at once.
# Tier 2 adds Instagram; tier 3 re-runs every platform with a simplified query.
TIER_PLATFORMS: tuple[tuple[Platform, ...], ...] = (
    (Platform.PINTEREST, Platform.REDDIT, Platform.OTHER),
    (Platform.INSTAGRAM,),
)
ALL_PLATFORMS: tuple[Platform, ...] = (
    Platform.PINTEREST,
    Platform.REDDIT,
    Platform.INSTAGRAM,
    Platform.OTHER,
)


def download_headers(platform: Platform) -> Headers:
    return _DOWNLOAD_HEADERS.get(platform, ())
