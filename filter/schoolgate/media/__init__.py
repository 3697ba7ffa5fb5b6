"""Media: sniffing and bounded decoding of images and video, normalised views, and the
hashes and features computed from them (the same way for banking and for matching)."""
