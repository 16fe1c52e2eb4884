from datasets.download.cli import main

main()
