"""What `tools/mutate` mutates, which tests it runs for each module, mutants marked equivalent, and the
planted bug kinds. Edit this file when a module moves or its tests do.

TARGETS: name -> the module and its tests in stages. Each stage is one pytest run; the next stage runs
only if the mutant survived the one before, so put the fast tests that should kill everything first
and the slow ones that check the call sites after.

EQUIVALENT: name -> mutants that cannot change behaviour, matched by operator (one name, or a tuple of
names sharing a line and a reason) and by a piece of the source line they sit on (and, with "mutant", a
piece of the mutated line, where only some of an operator's mutants on that line are equivalent), each
with why. They are left out of the score and listed by `--survivors`.

PLANTED: the bug kinds issue 14 names (and a few like them), each a one-line edit that a developer
could make, with the tests that must kill it. `tools/mutate --planted` plants them one at a time.
"""

# test_fetch.py's tests that need no model (the rest build a server on the tiny preset).
FETCH_FAST = "not server_fetches and not other_url_schemes"

# test_formats.py's and test_media.py's tests that encode without generating (the rest need the tiny model).
ENCODE_NO_MODEL = ("not generate_returns and not job_serves and not same_clip and not same_seed and not not_included "
                   "and not video_stream and not audio_stream and not exactly_one")

TARGETS: dict[str, dict] = {
    "schedules": {
        "module": "ltx2/pipelines/schedules.py",
        "stages": [["tests/test_schedules.py"]],
    },
    "geometry": {
        "module": "ltx2/models/geometry.py",
        "stages": [["tests/test_geometry.py"], ["tests/test_tiny_preset.py"]],
    },
    "layout": {
        "module": "ltx2/models/layout.py",
        "stages": [["tests/test_layout.py"], ["tests/test_loading.py"]],
    },
    "configs": {
        "module": "ltx2/models/configs.py",
        "stages": [["tests/test_configs.py", "tests/test_layout.py"], ["tests/test_loading.py"]],
    },
    "audio_features": {
        "module": "ltx2/media/audio_features.py",
        "stages": [["tests/test_audio_features.py"]],
    },
    "fp8": {
        "module": "ltx2/models/fp8.py",
        "stages": [["tests/test_fp8.py"], ["tests/test_loading.py"]],
    },
    "security": {
        "module": "ltx2/serving/security.py",
        "stages": [["tests/test_security_rules.py"], ["tests/test_security.py", "tests/test_auth_routes.py"]],
    },
    "fetch": {
        "module": "ltx2/media/fetch.py",
        "stages": [["tests/test_fetch.py", "-k", FETCH_FAST],
                   ["tests/test_fetch.py", "-k", f"not ({FETCH_FAST})"]],
    },
    "guidance": {
        "module": "ltx2/pipelines/guidance.py",
        "stages": [["tests/test_guidance_rules.py"], ["tests/test_reference_rules.py", "-k", "guider or cfg or passes"]],
    },
    "conditioning": {
        "module": "ltx2/pipelines/conditioning.py",
        "stages": [["tests/test_guidance_rules.py"],
                   ["tests/test_conditioning.py", "tests/test_fetch.py", "-k", "conditioning"]],
    },
    "schema": {
        "module": "ltx2/schema.py",
        "stages": [["tests/test_schema_rules.py", "tests/test_request_rules.py"]],
    },
    "encode": {
        "module": "ltx2/media/encode.py",
        "stages": [["tests/test_encode_rules.py"], ["tests/test_formats.py", "tests/test_media.py", "-k", ENCODE_NO_MODEL]],
    },
}

# CPython keeps one object for each int in -5..256, so `is` and `==` agree on small counts.
SMALL_INT_IS = "CPython caches small ints: `is` and `==` agree for this count"
SCOPE_TYPES = ('the scope type is "http" or "websocket" on this line (lifespan returned earlier), and "http" < '
               '"websocket": the ordering comparison and the equality agree')
APP_STARTS = ("an app's response messages are http.response.start first, then http.response.body: whichever of "
              "them first sets app_started, it is set from the start message on, as with ==")
MULTIPLE_OF_CTX = "pydantic puts multiple_of in the context of multiple_of errors only, so the second test decides"
ONLY_EVEN = "the request model's only multipleOf is 2 (width, height): the other branch is never taken"
# security._route_path cuts a proxy's root_path off the path only at a "/".
CUT_ROOT = ("the path is only cut where the next character is /: any other cut leaves a path that does not start "
            "with /, and no open path (/health, the docs pages) does, so the key is still asked for")

SOUNDTRACK_PLANAR = ("probe_video's branch for interleaved audio is never taken on our files: FFmpeg decodes AAC and "
                     "Opus to planar float")
SAME_MODULE_CONSTANT = ("the codec name is FORMATS' own constant from this module, and CPython compiles equal string "
                        "constants of one module to one object: `is` and `==` agree")

EQUIVALENT: dict[str, list[dict]] = {
    "audio_features": [
        {"operator": "ReplaceComparisonOperator_NotEq_IsNot", "line": "if wave.shape[0] != channels:",
         "why": SMALL_INT_IS},
        {"operator": "ReplaceComparisonOperator_GtE_Gt", "line": "hz >= _MIN_LOG_HZ",
         "why": "Slaney's mel scale is continuous at its break: at exactly 1000 Hz both branches give 15 mels"},
        {"operator": "ReplaceComparisonOperator_GtE_Gt", "line": "mel >= _MIN_LOG_MEL",
         "why": "continuous at the break: at exactly 15 mels both branches give 1000 Hz"},
        {"operator": "ReplaceBinaryOperator_FloorDiv_Div", "line": "if wave.shape[1] <= cfg.n_fft // 2:",
         "why": "n_fft is even: a sample count compares the same with 512.0 as with 512"},
        {"operator": "ReplaceBinaryOperator_FloorDiv_Div", "line": "freqs = np.arange(cfg.n_fft // 2 + 1)",
         "why": "n_fft is even, so np.arange(n_fft / 2 + 1) holds the same values (as floats, multiplied into floats)"},
    ],
    "fp8": [
        {"operator": "ReplaceComparisonOperator_Gt_NotEq", "line": "scale = torch.where(amax > 0",
         "why": "amax (of the weight, or of a batch's activations) is a maximum of absolute values, never "
                "negative: > 0 and != 0 agree (NaN values come out NaN with either scale)"},
        {"operator": "ReplaceComparisonOperator_Eq_GtE", "line": 'if setting == "upcast":',
         "why": 'the setting was checked against ("auto", "scaled-mm", "upcast") just before, and the other two sort '
                'before "upcast"'},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": 'if setting == "auto":',
         "why": '"upcast" returned on the line before, and "scaled-mm" sorts after "auto": <= holds for "auto" alone'},
        {"operator": "ReplaceComparisonOperator_Eq_GtE", "line": 'if mode == "scaled-mm" and (self.in_features',
         "why": 'mode is "scaled-mm" or "upcast" (checked on the line before): >= also takes "upcast", which the '
                'branch sets to "upcast" anyway'},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": 'if mode == "scaled-mm" and (self.in_features',
         "why": 'mode is "scaled-mm" or "upcast", and "upcast" sorts after "scaled-mm": <= holds for "scaled-mm" alone'},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": 'if self._compute == "scaled-mm":',
         "why": 'the mode is "scaled-mm" or "upcast" (the setter allows no other), and "upcast" sorts after'},
        {"operator": "ReplaceTrueWithFalse", "line": "def _apply(self, fn",
         "why": "an FP8Linear has no submodules: there is nothing to recurse into"},
        {"operator": "NumberReplacer", "line": "probe = fn(torch.empty(0,",
         "why": "the probe only shows which dtype and device fn maps to; its size does not matter"},
        {"operator": "ReplaceComparisonOperator_Eq_Is", "line": "if probe.dtype == t.dtype:",
         "why": "torch dtypes are singletons: `is` and `==` agree"},
        {"operator": "ReplaceComparisonOperator_NotEq_IsNot", "line": "state_dict[prefix + name].dtype != dtype",
         "why": "torch dtypes are singletons: `is not` and `!=` agree"},
        {"operator": "ReplaceBinaryOperator_Mul_Div", "line": "m.weight.numel() * m.weight.element_size()",
         "why": "an FP8Linear's weight is float8, one byte an element: multiplying and dividing by 1 agree"},
        {"operator": "ReplaceComparisonOperator_Eq_Is", "line": 'or n == ""]',
         "why": "CPython keeps one empty string: `is` and `==` agree"},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": 'or n == ""]',
         "why": 'no string sorts before "": <= "" holds for "" alone'},
    ],
    "configs": [
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": "if len(blocks) % 2 == 0 or bad:",
         "why": "a count modulo 2 is never negative: <= 0 and == 0 agree"},
        {"operator": "ReplaceComparisonOperator_NotEq_IsNot", "line": 'if c.get("resblock", "1") != "1"',
         "why": 'CPython keeps one object per one-character string, so a "1" read from the file is this "1": '
                '`is not` and `!=` agree (and any other value differs either way)'},
    ],
    "schedules": [
        {"operator": "ReplaceComparisonOperator_Eq_Is", "line": "steps == len(DISTILLED_SIGMAS)", "why": SMALL_INT_IS},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": "if steps == 1:",
         "why": "steps < 1 was refused on the line before, so `<= 1` and `== 1` take the same steps"},
    ],
    "guidance": [
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": "if knobs.rescale == 0.0:",
         "why": "a rescale is never negative (the request bounds it to [0, 1])"},
        {"operator": "ReplaceComparisonOperator_Gt_GtE", "line": "safe = torch.where(token_sigma > 0",
         "why": "`safe` only keeps the division of held tokens (sigma 0) finite in the branch the torch.where "
                "on the next line throws away"},
        {"operator": "NumberReplacer", "line": "safe = torch.where(token_sigma > 0", "mutant": "token_sigma > -1",
         "why": "as for >= 0: the values it changes are those of held tokens, which the next line replaces by 0"},
        {"operator": "ReplaceComparisonOperator_Gt_NotEq", "line": "torch.where(token_sigma > 0",
         "why": "a token's sigma is never negative (the step's sigma times one minus a strength in [0, 1])"},
    ],
    "conditioning": [
        {"operator": "ReplaceComparisonOperator_NotEq_IsNot", "line": 'image.convert("RGB") if image.mode != "RGB"',
         "why": "when it differs, an RGB image is converted to RGB: a copy with the same pixels"},
        {"operator": "ReplaceComparisonOperator_Gt_NotEq", "line": "torch.where(mask > 0",
         "why": "a strength is never negative (the request bounds it to [0, 1])"},
    ],
    "schema": [
        {"operator": "NumberReplacer", "line": "examples=[",
         "why": "an example value shown in /docs, not a rule (test_schema_rules checks every example is valid)"},
        {"operator": "ReplaceTrueWithFalse", "line": "examples=[True]",
         "why": "an example value shown in /docs, not a rule; both booleans are valid"},
        {"operator": "ReplaceFalseWithTrue", "line": "examples=[False]",
         "why": "an example value shown in /docs, not a rule; both booleans are valid"},
        {"operator": "NumberReplacer", "line": "below = (value - 1) // 8 * 8 + 1", "mutant": "(value - 2)",
         "why": "value is not 8k+1 here, so value - 1 is not a multiple of 8 and (value - 2) // 8 == (value - 1) // 8"},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": 'if value == "GIF (.gif)" and',
         "why": 'the other output types ("PRORES4444 (.mov)", "VP9 (.webm)", "X264 (.mp4)") all sort after '
                '"GIF (.gif)", so <= holds for the GIF alone'},
        {"operator": "ReplaceComparisonOperator_Eq_GtE", "line": 'if kind == "multiple_of" and ctx.get("multiple_of") == 2',
         "mutant": 'kind >= "multiple_of"', "why": MULTIPLE_OF_CTX},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": 'if kind == "multiple_of" and ctx.get("multiple_of") == 2',
         "mutant": 'kind <= "multiple_of"', "why": MULTIPLE_OF_CTX},
        {"operator": "ReplaceComparisonOperator_Eq_GtE", "line": 'op = ">=" if kind == "greater_than_equal"',
         "why": 'kind is greater_than_equal or greater_than here, and "greater_than" sorts before it'},
        {"operator": "ReplaceComparisonOperator_Eq_GtE", "line": 'op = "<=" if kind == "less_than_equal"',
         "why": 'kind is less_than_equal or less_than here, and "less_than" sorts before it'},
        {"operator": "ReplaceComparisonOperator_Eq_Is", "line": 'if value == "GIF (.gif)" and',
         "why": "pydantic hands the validator the Literal's own value object, which is this constant, even for a "
                "type that came in as JSON (checked by test_gif_is_limited_to_50_fps)"},
        {"operator": "ReplaceComparisonOperator_Eq_Is", "line": 'kind.startswith("int_") or kind == "int_from_float"',
         "why": 'kind.startswith("int_") already covers "int_from_float": the second test never decides'},
        {"operator": ("ReplaceComparisonOperator_Eq_GtE", "ReplaceComparisonOperator_Eq_LtE",
                      "ReplaceBinaryOperator_Add_Mul", "ReplaceBinaryOperator_Add_Sub"),
         "line": "'even' if prop['multipleOf'] == 2", "why": ONLY_EVEN},
        {"operator": "RemoveDecorator", "line": "@classmethod",
         "why": "pydantic's field_validator and model_validator make the function a classmethod with or without it"},
    ],
    "encode": [
        {"operator": "NumberReplacer", "line": "cpus = os.cpu_count() or 1", "mutant": "or 0",
         "why": "max(1, ...) on the return line turns 0 CPUs into 1 anyway"},
        {"operator": "NumberReplacer", "line": "width <= 0 or height <= 0", "mutant": "width <= 1",
         "why": "a width of 1 is odd and refused by width % 2 first"},
        {"operator": "NumberReplacer", "line": "width <= 0 or height <= 0", "mutant": "height <= 1",
         "why": "a height of 1 is odd and refused by height % 2 first"},
        {"operator": "ReplaceComparisonOperator_Eq_Is", "line": 'if codec == "gif":', "why": SAME_MODULE_CONSTANT},
        {"operator": "ReplaceComparisonOperator_Eq_Is", "line": 'if codec == "libx264":', "why": SAME_MODULE_CONSTANT},
        {"operator": "ReplaceComparisonOperator_Eq_Is", "line": 'elif codec == "libvpx-vp9":', "why": SAME_MODULE_CONSTANT},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": 'if codec == "gif":',
         "why": 'the video codecs are gif, libvpx-vp9, libx264 and prores_ks: only "gif" sorts at or before "gif"'},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": 'elif codec == "libvpx-vp9":',
         "why": 'gif and libx264 took the branches before, and "prores_ks" sorts after "libvpx-vp9"'},
        {"operator": "NumberReplacer", "line": "tiles = max(0, min(int(np.log2(", "mutant": "max( -1,",
         "why": "the log2 of a number of at least 1 is never negative: the floor of 0 or -1 is never reached"},
        {"operator": "ReplaceBinaryOperator_FloorDiv_Div", "line": "tiles = max(0, min(int(np.log2(",
         "why": "for x >= 1, floor(log2(x)) == floor(log2(floor(x))) (the powers of two are whole numbers), and "
                "both forms are raised to 1 below one column"},
        {"operator": "NumberReplacer", "line": "self.time_base = Fraction(1, encoder.fps)", "mutant": "Fraction( 0,",
         "why": "PyAV takes a frame's zero time base as unset and uses the stream's, which is 1/fps as well "
                "(checked: the same timestamps in all four formats)"},
        {"operator": "NumberReplacer", "line": "sample = np.concatenate(", "mutant": "axis= 1",
         "why": "median cut depends only on how often each colour occurs, not on where: side by side or stacked, "
                "the sample holds the same pixels"},
        {"operator": "NumberReplacer", "line": "rgb = np.asarray(palette.getpalette()[: 3 * 256]",
         "why": "the palette holds at most 255 colours (the 256th index is the transparent one): any cut from 255 "
                "entries up keeps them all, and numpy infers a negative reshape size whatever its value"},
        {"operator": "NumberReplacer", "line": "argb[: len(rgb), 0], argb[: len(rgb), 1:] = 255, rgb",
         "why": "FFmpeg's GIF encoder takes the entry with the smallest alpha below 128 as the transparent one; "
                "an alpha of 254 or 255 is opaque either way"},
        {"operator": "NumberReplacer", "line": "argb[self.colours:] = 0",
         "why": "alpha 1 is still the smallest and below 128, so the same entry is the transparent one; the "
                "entries past it are never used by a pixel"},
        {"operator": "ReplaceComparisonOperator_Eq_GtE", "line": 'if codec == "libopus" and rate not in',
         "why": 'the audio codecs are aac and libopus, and "aac" sorts before "libopus"'},
        {"operator": "ReplaceComparisonOperator_Eq_Is", "line": 'if codec == "libopus" and rate not in',
         "why": SAME_MODULE_CONSTANT},
        {"operator": "NumberReplacer", "line": 'if codec == "libopus" and rate not in', "mutant": "47999)",
         "why": "48 kHz taken out of the list is sent to 48 kHz: itself"},
        {"operator": "NumberReplacer", "line": 'if codec == "libopus" and rate not in', "mutant": "48001)",
         "why": "48 kHz taken out of the list is sent to 48 kHz: itself"},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": "if wave.ndim == 1:",
         "why": "a 0-d waveform fails either way (no channels to index, or no samples to encode)"},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": "if wave.shape[0] == 1:",
         "why": "a waveform of 0 channels repeated is still 0 channels: it fails the stereo frame either way"},
        {"operator": "NumberReplacer", "line": "wave = np.repeat(wave, 2, axis=0)",
         "why": "only the first two channels are kept on the next line: three copies of mono keep the same two"},
        {"operator": "ReplaceTrueWithFalse", "line": "ctx.qscale = True",
         "why": "prores_ks takes global_quality as its quantiser with or without the flag (checked: the same file "
                "sizes at all four qualities either way); the flag states the intent"},
        {"operator": "NumberReplacer", "line": "stream = container.streams.video[0]",
         "why": "our files hold one video stream: the first is the last"},
        {"operator": "NumberReplacer", "line": "stream = container.streams.audio[0]",
         "why": "our files hold at most one audio stream: the first is the last"},
        {"operator": ("ReplaceUnaryOperator_Delete_USub", "ReplaceUnaryOperator_USub_Not",
                      "ReplaceUnaryOperator_USub_UAdd", "NumberReplacer"),
         "line": "f.to_ndarray().reshape(-1, len(f.layout.channels)).T", "why": SOUNDTRACK_PLANAR},
        {"operator": "NumberReplacer", "line": 'if chunks else np.zeros((2, 0), np.float32)',
         "why": "our files never hold an audio stream without samples (an empty waveform is refused, and a "
                "track with no packets is not written), so probe_video's empty case is never reached"},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": "if wave.shape[1] == 0:",
         "why": "a sample count is never negative: <= 0 and == 0 agree"},
        {"operator": ("RemoveDecorator", "NumberReplacer"), "line": "@lru_cache(maxsize=1)",
         "why": "the cache only saves asking the library again: the CPU's flags are the same each time"},
    ],
    "security": [
        {"operator": "ReplaceFalseWithTrue", "line": "close: bool = False) -> None:",
         "why": "every call of _respond passes close itself: the default is never used"},
        {"operator": ("ReplaceComparisonOperator_Eq_GtE", "ReplaceComparisonOperator_Eq_LtE"),
         "line": 'if message["type"] == "http.response.start":', "why": APP_STARTS},
        {"operator": "ReplaceComparisonOperator_Eq_IsNot", "line": 'if message["type"] == "http.response.start":',
         "why": "differs only if the app sends the very string object of this line's literal; an app builds its own "
                "(rebuilt strings make `is not` true for the start message too), and the start always comes first"},
        {"operator": "ReplaceComparisonOperator_Gt_NotEq", "line": "if len(presented) > 1:",
         "why": "no credential at all returned just before, so the count here is at least 1: != 1 and > 1 agree"},
        {"operator": "NumberReplacer", "line": "_digest(presented[0])", "mutant": "presented[ -1]",
         "why": "exactly one credential is left here: the first is the last"},
        {"operator": "ReplaceComparisonOperator_Eq_GtE", "line": 'if scope["type"] == "websocket":',
         "why": SCOPE_TYPES},
        {"operator": "ReplaceComparisonOperator_NotEq_Gt", "line": 'if scope["type"] != "http" or', "why": SCOPE_TYPES},
        {"operator": "ReplaceComparisonOperator_Eq_GtE", "line": "path[len(root)] == \"/\"", "mutant": "path >= root",
         "why": CUT_ROOT},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": "path[len(root)] == \"/\"", "mutant": "path <= root",
         "why": "path starts with root here, so path <= root only when path == root"},
        {"operator": "ReplaceComparisonOperator_Eq_GtE", "line": "path[len(root)] == \"/\"", "mutant": '>= "/"',
         "why": CUT_ROOT},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": "path[len(root)] == \"/\"", "mutant": '<= "/"',
         "why": CUT_ROOT},
        {"operator": "ReplaceComparisonOperator_Eq_Is", "line": "path[len(root)] == \"/\"", "mutant": 'is "/"',
         "why": "CPython keeps one object per one-character string: `is` and `==` agree for \"/\""},
        {"operator": "NumberReplacer", "line": 'raw.split("#", 1)[0]', "mutant": 'split("#", 2)',
         "why": "only the part before the first # is kept, whatever the split count past 1"},
    ],
    "fetch": [
        {"operator": "NumberReplacer", "line": "_SAFE_IN_TARGET = ", "mutant": "range(33, 126)",
         "why": "the one character it drops, ~ (126), is always safe for urllib.parse.quote"},
        {"operator": "ReplaceAndWithOr", "line": "if self._closed and self._readers == 0:",
         "why": "a connection carries one request: closing the socket when its one reader closes rather than at "
                "conn.close() changes nothing observable"},
        {"operator": "ReplaceComparisonOperator_Eq_GtE", "line": "if self._closed and self._readers == 0:",
         "why": "http.client makes one reader per connection here, so after its close the count is 0: >= 0 and "
                "== 0 agree"},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": "if self._closed and self._readers == 0:",
         "why": "the reader count never goes below 0"},
        {"operator": "ReplaceComparisonOperator_LtE_Lt", "line": "if left <= 0:",
         "why": "differs only when deadline - monotonic() is exactly 0.0, a float equality no clock reading hits "
                "in practice (the next call, a moment later, is past the deadline either way)"},
        {"operator": "ReplaceFalseWithTrue", "line": "self._readers, self._closed = 0, False",
         "why": "a connection carries one request: the socket then closes when the response's reader does rather "
                "than at conn.close() a moment later, and nothing reads or writes in between"},
        {"operator": "ReplaceComparisonOperator_Eq_LtE", "line": "if self._readers == 0:",
         "why": "the reader count never goes below 0 (one decrement per makefile() reader, on its first close)"},
        {"operator": "ReplaceComparisonOperator_Lt_NotEq", "line": "len(body) < int(length)",
         "why": "http.client stops reading at Content-Length, so the body is never longer: != and < agree"},
        {"operator": "NumberReplacer", "line": "thread.join(max(0.0,", "mutant": "max( -1.0",
         "why": "Thread.join treats a negative timeout as 0"},
        {"operator": "NumberReplacer", "line": 'address.split("%", 1)[0]',
         "why": "only the part before the first % is kept whatever the split count; and with no split at all "
                "ipaddress (3.9+) parses the zone itself and judges the address without it"},
        {"operator": "ReplaceOrWithAnd", "line": "ip.is_private or ip.is_loopback or ip.is_link_local",
         "mutant": "ip.is_private and ip.is_loopback",
         "why": "private, loopback and link-local addresses are all non-global in ipaddress's tables, so "
                "`not ip.is_global` already refuses them: and-ing two of those terms changes nothing"},
        {"operator": "ReplaceOrWithAnd", "line": "ip.is_private or ip.is_loopback or ip.is_link_local",
         "mutant": "ip.is_loopback and ip.is_link_local",
         "why": "loopback and link-local addresses are non-global: `not ip.is_global` already refuses them"},
        {"operator": "ReplaceComparisonOperator_Eq_GtE", "line": 'scheme == "https"', "mutant": 'scheme >= "https"',
         "why": 'the scheme is "http" or "https" here (others were refused above), and "http" < "https"'},
        {"operator": "NumberReplacer", "line": "if response.status in REDIRECT_STATUSES or not 200 <= response.status",
         "mutant": "199 <=",
         "why": "only skips reading the body of a 1xx final answer, which has none (http.client sets its length to 0); "
                "fetch() then refuses the status the same way"},
        {"operator": "ReplaceComparisonOperator_Lt_NotEq", "line": 'settings.url_timeout < float("inf")',
         "mutant": '!= float("inf")',
         "why": "for a number above 0, being below infinity and being other than infinity are the same (NaN fails "
                "the 0 < first)"},
        {"operator": "NumberReplacer", "line": "value[:8].lower()", "mutant": "value[: 9]",
         "why": "a 9-character prefix starts with http:// or https:// exactly when the 8-character one does"},
        {"operator": "NumberReplacer", "line": "CHUNK = 64 * 1024",
         "why": "the read size only sets how far one read may run past max_bytes before the count refuses it; "
                "the bytes returned and the refusals are the same"},
        {"operator": "ReplaceBinaryOperator_Mul_Add", "line": "CHUNK = 64 * 1024",
         "why": "the read size only sets how far one read may run past max_bytes before the count refuses it"},
    ],
}

PLANTED: list[dict] = [
    {
        "kind": "token shift without exp",
        "file": "ltx2/pipelines/schedules.py",
        "old": "shift = math.exp(token_shift(num_tokens))",
        "new": "shift = token_shift(num_tokens)",
        "tests": ["tests/test_schedules.py"],
    },
    {
        "kind": "VAE latent mean and std swapped",
        "file": "ltx2/models/layout.py",
        "old": '_STATISTICS = {"latents_mean": "per_channel_statistics.mean-of-means", '
               '"latents_std": "per_channel_statistics.std-of-means"}',
        "new": '_STATISTICS = {"latents_mean": "per_channel_statistics.std-of-means", '
               '"latents_std": "per_channel_statistics.mean-of-means"}',
        "tests": ["tests/test_loading.py"],
    },
    {
        "kind": "FP8 scales in the model dtype",
        "file": "ltx2/models/components.py",
        "old": 'if key.endswith(("weight_scale", "input_scale")):\n        return torch.float32',
        "new": 'if key.endswith(("weight_scale", "input_scale")):\n        return dtype',
        "tests": ["tests/test_loading.py"],
    },
    {
        "kind": "no clamp before the FP8 cast (scaled-mm)",
        "file": "ltx2/models/fp8.py",
        "old": "qx = (x2 / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE).contiguous()",
        "new": "qx = (x2 / scale).to(FP8_DTYPE).contiguous()",
        "tests": ["tests/test_fp8.py"],
    },
    {
        "kind": "mono not duplicated (audio VAE input)",
        "file": "ltx2/media/audio_features.py",
        "old": "    if wave.shape[0] == 1 and channels == 2:\n        wave = wave.expand(2, -1)\n",
        "new": "    if wave.shape[0] == 1 and channels == 2:\n        wave = torch.cat([wave, torch.zeros_like(wave)])\n",
        "tests": ["tests/test_audio_features.py"],
    },
    {
        "kind": "8k+1 frames loosened to 4k+1",
        "file": "ltx2/schema.py",
        "old": "if (value - 1) % 8:",
        "new": "if (value - 1) % 4:",
        "tests": ["tests/test_request_rules.py"],
    },
    {
        "kind": "/metrics served without the API key",
        "file": "ltx2/serving/security.py",
        "old": 'open_paths = {"/health"}',
        "new": 'open_paths = {"/health", "/metrics"}',
        "tests": ["tests/test_security_rules.py"],
    },
    {
        "kind": "audio-length +1 lost (mel frames)",
        "file": "ltx2/media/audio_features.py",
        "old": "return 1 + samples // cfg.hop_length",
        "new": "return samples // cfg.hop_length",
        "tests": ["tests/test_audio_features.py"],
    },
    {
        "kind": "audio latent length from the reference's order lost",
        "file": "ltx2/models/geometry.py",
        "old": "return round(num_frames / fps * (sample_rate / hop_length / compression))",
        "new": "return round(num_frames / fps * sample_rate / hop_length / compression)",
        "tests": ["tests/test_geometry.py"],
    },
    {
        "kind": "latent frames without the causal first frame",
        "file": "ltx2/models/geometry.py",
        "old": "return (num_frames - 1) // temporal + 1, height // spatial, width // spatial",
        "new": "return num_frames // temporal + 1, height // spatial, width // spatial",
        "tests": ["tests/test_geometry.py"],
    },
    {
        "kind": "classifier-free guidance with cond and uncond swapped",
        "file": "ltx2/pipelines/guidance.py",
        "old": 'pred = pred + (knobs.cfg - 1) * (cond - outputs["uncond"])',
        "new": 'pred = pred + (knobs.cfg - 1) * (outputs["uncond"] - cond)',
        "tests": ["tests/test_guidance_rules.py"],
    },
    {
        "kind": "end keyframe placed one frame late",
        "file": "ltx2/keyframes.py",
        "old": "listed.append((end[2], last, end[1], end[2]))",
        "new": "listed.append((end[2], last + 1, end[1], end[2]))",
        "tests": ["tests/test_keyframes.py", "-k", "image_end or in_order"],
    },
    {
        "kind": "conditioned token's starting noise from the wrong side of its strength",
        "file": "ltx2/pipelines/conditioning.py",
        "old": "level = (1 - mask) * sigma0",
        "new": "level = mask * sigma0",
        "tests": ["tests/test_guidance_rules.py"],
    },
    {
        "kind": "image pixels scaled to [0, 1] instead of [-1, 1]",
        "file": "ltx2/media/conditioning_image.py",
        "old": "return (pixels / 127.5 - 1.0)[None, :, None]",
        "new": "return (pixels / 255.0)[None, :, None]",
        "tests": ["tests/test_guidance_rules.py"],
    },
]
