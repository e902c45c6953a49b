"""msdfast as a threestudio extension: copy or link this folder into threestudio's `custom/`.

    ln -s /path/to/msdfast/integrations/threestudio /path/to/threestudio/custom/msdfast-threestudio
    python launch.py --config custom/msdfast-threestudio/configs/msd.yaml --train --gpu 0 \
        system.prompt_processor.prompt="a zoomed out DSLR photo of a hamburger"

threestudio imports the folder under its own name (sys.modules[<folder name>]), so the folder must NOT be named
`msdfast` (that would shadow the msdfast package).

threestudio's launch.py imports this package (load_custom_modules); it registers `msdfast-guidance`
(importing twice is harmless). A stock config switches by changing only `system.guidance_type` to
"msdfast-guidance": its guidance block loads unchanged (msdfast.adapters.threestudio.translate_config).
"""
if __name__ == "msdfast":
    raise ImportError("custom/msdfast: threestudio imports extensions under their folder name, which would shadow "
                      "the msdfast package; rename the folder (e.g. custom/msdfast-threestudio)")

from msdfast.adapters.threestudio import register_with_threestudio  # noqa: E402

MSDFastThreestudioGuidance = register_with_threestudio("msdfast-guidance")
