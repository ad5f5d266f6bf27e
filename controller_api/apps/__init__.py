"""Applications (issue 14): what an operator declares and the controller places.

spec   the app spec file: YAML in, a checked, frozen `AppSpec` out, or one line naming file:line
       and field
"""

from controller_api.apps.spec import AppSpec, AppSpecError, parse_app

__all__ = ["AppSpec", "AppSpecError", "parse_app"]
