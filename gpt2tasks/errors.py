"""The one exception type for mistakes a user can fix.

Everything a user can cause (a bad override, a missing file or column, a model that cannot be
loaded offline, ...) raises `UserError` with a short message that names the config key and the
fix. The CLI turns it into one paragraph on stderr and a non-zero exit, never a traceback.
"""


class UserError(Exception):
    """A problem in the user's config or data, with a message that says how to fix it."""
