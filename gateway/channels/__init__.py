"""Channel logs: the data-plane storage of brokers and channels (see `base.ChannelLog`)."""

from __future__ import annotations

from gateway.channels.base import ChannelLog, ChannelLogClosed
from gateway.channels.sqlite import SqliteChannelLog

__all__ = ["ChannelLog", "ChannelLogClosed", "SqliteChannelLog"]
