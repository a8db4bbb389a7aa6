"""Hardware profiles: one TOML file per module variant, validated by a strict schema."""

from .loader import ProfileError, list_profiles, load_profile, load_profile_file, parse_profile, search_path
from .schema import Profile

__all__ = [
    "Profile",
    "ProfileError",
    "list_profiles",
    "load_profile",
    "load_profile_file",
    "parse_profile",
    "search_path",
]
