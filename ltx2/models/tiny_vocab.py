"""The tiny preset's English vocabulary: whole words and common word pieces, written for this project.

The real Gemma 3 vocabulary (262k entries) holds nearly every common English word as one token, with
its leading space. The tiny tokenizer keeps a few thousand of them, so a prompt costs about as many
tokens on the tiny preset as on the real model (tests/test_tiny_preset.py measures it). The words lean
to what video prompts describe: scenes, light, motion, camera work and sound.
"""

WORDS = """
a an the and or but nor so yet if then than that this these those there here where when while what which who
whom whose why how all any both each every few more most other some such no not only own same very just also
too again once ever never always often still even much many less least enough almost about above across after
against along among around as at before behind below beneath beside besides between beyond by down during
except for from in inside into like near of off on onto out outside over past since through throughout till to
toward towards under underneath until up upon with within without via per i me my mine myself you your yours
yourself we us our ours ourselves he him his himself she her hers herself it its itself they them their theirs
themselves one ones someone something somewhere anyone anything everyone everything everywhere nobody nothing
nowhere is are was were be been being am have has had having do does did doing done will would shall should
can could may might must ought let lets go goes going gone went get gets getting got gotten make makes making
made take takes taking took taken come comes coming came see sees seeing saw seen look looks looking looked
watch watches watching watched give gives giving gave given find finds finding found think thinks thinking
thought tell tells telling told say says saying said know knows knowing knew known feel feels feeling felt
leave leaves leaving left keep keeps keeping kept begin begins beginning began start starts starting started
stop stops stopping stopped turn turns turning turned move moves moving moved walk walks walking walked run
runs running ran jump jumps jumping jumped fly flies flying flew flown swim swims swimming swam climb climbs
climbing climbed fall falls falling fell fallen rise rises rising rose risen sit sits sitting sat stand stands
standing stood lie lies lying lay sleep sleeps sleeping slept wake wakes waking woke eat eats eating ate drink
drinks drinking drank cook cooks cooking cooked play plays playing played sing sings singing sang dance dances
dancing danced laugh laughs laughing laughed smile smiles smiling smiled cry cries crying cried shout shouts
shouting shouted whisper whispers whispering whispered speak speaks speaking spoke talk talks talking talked
call calls calling called hold holds holding held carry carries carrying carried push pushes pushing pushed
pull pulls pulling pulled throw throws throwing threw catch catches catching caught hit hits hitting open
opens opening opened close closes closing closed drive drives driving drove ride rides riding rode float
floats floating floated drift drifts drifting drifted glide glides gliding glided spin spins spinning spun
roll rolls rolling rolled shake shakes shaking shook wave waves waving waved point points pointing pointed
reach reaches reaching reached touch touches touching touched grab grabs grabbing grabbed lift lifts lifting
lifted drop drops dropping dropped pour pours pouring poured fill fills filling filled splash splashes
splashing splashed flow flows flowing flowed burn burns burning burned glow glows glowing glowed shine shines
shining shone sparkle sparkles sparkling flicker flickers flickering flickered blink blinks blinking blinked
fade fades fading faded appear appears appearing appeared disappear disappears disappearing disappeared emerge
emerges emerging emerged follow follows following followed lead leads leading led chase chases chasing chased
wander wanders wandering wandered explore explores exploring explored build builds building built break breaks
breaking broke broken write writes writing wrote written read reads reading paint paints painting painted draw
draws drawing drew drawn wear wears wearing wore worn hang hangs hanging hung sway sways swaying swayed bounce
bounces bouncing bounced crash crashes crashing crashed rush rushes rushing rushed hurry race races racing
raced march marches marching marched crawl crawls crawling crawled sneak sneaks sneaking kneel kneels kneeling
knelt lean leans leaning leaned bend bends bending bent stretch stretches stretching stretched breathe
breathes breathing breathed blow blows blowing blew rain rains raining rained snow snows snowing snowed freeze
freezes freezing froze frozen melt melts melting melted grow grows growing grew grown bloom blooms blooming
bloomed change changes changing changed become becomes becoming became seem seems seemed remain remains
remained stay stays staying stayed wait waits waiting waited return returns returning returned enter enters
entering entered exit exits exiting exited cross crosses crossing crossed pass passes passing passed approach
approaches approaching approached arrive arrives arriving arrived meet meets meeting met hug hugs hugging
hugged kiss kisses kissing kissed fight fights fighting fought win wins winning won lose loses losing lost
help helps helping helped use uses using used need needs needed want wants wanted try tries trying tried show
shows showing showed shown reveal reveals revealing revealed hide hides hiding hid hidden cover covers
covering covered surround surrounds surrounding surrounded reflect reflects reflecting reflected cast casts
casting illuminate illuminates illuminating illuminated light lights lighting lit dim dims dimming dimmed
frame frames framing framed focus focuses focusing focused zoom zooms zooming zoomed pan pans panning panned
tilt tilts tilting tilted track tracks tracking tracked dolly dollies orbit orbits orbiting orbited rotate
rotates rotating rotated circle circles circling circled hover hovers hovering hovered soar soars soaring
soared dive dives diving dived plunge plunges plunging plunged feature features featuring featured contain
contains containing include includes including included capture captures capturing captured record records
recording recorded listen listens listening listened hear hears hearing heard sound sounds sounding sounded
ring rings ringing rang hum hums humming hummed buzz buzzes buzzing roar roars roaring roared crackle crackles
crackling rustle rustles rustling echo echoes echoing echoed chirp chirps chirping chirped bark barks barking
barked purr purrs purring meow howl howls howling growl growls growling clap claps clapping clapped knock
knocks knocking knocked beep beeps beeping click clicks clicking clicked tick ticks ticking thunder thunders
rumble rumbles rumbling rumbled hiss hisses hissing drip drips dripping dripped creak creaks creaking squeak
squeaks squeaking man men woman women person people child children kid kids boy boys girl girls baby babies
family families friend friends mother father mom dad parent parents brother sister son daughter husband wife
couple crowd group team student students teacher doctor nurse chef farmer worker workers soldier soldiers king
queen prince princess knight warrior wizard witch robot robots alien aliens astronaut astronauts pilot driver
dancer dancers singer musician musicians artist painter player players runner athlete surfer skater hiker
tourist traveler stranger neighbor guard police officer detective scientist engineer monk priest hero villain
character characters figure figures face faces head heads hair eye eyes ear ears nose mouth lips teeth tongue
cheek cheeks chin neck shoulder shoulders arm arms hand hands finger fingers leg legs foot feet knee knees
back body bodies skin heart voice voices breath tears sweat blood bone bones expression expressions dog dogs
puppy cat cats kitten horse horses cow cows pig pigs sheep goat chicken chickens duck ducks bird birds eagle
owl owls crow pigeon parrot swan fish fishes shark sharks whale whales dolphin dolphins octopus turtle turtles
frog frogs snake snakes lizard dragon dragons lion lions tiger tigers bear bears wolf wolves fox foxes deer
rabbit rabbits mouse mice rat squirrel monkey monkeys elephant elephants giraffe zebra camel butterfly
butterflies bee bees ant ants spider insect insects animal animals creature creatures beast pet pets wing
wings tail tails fur feather feathers paw paws claw claws sky skies sun sunlight sunrise sunset moon moonlight
star stars cloud clouds cloudy rainy snowy storm storms stormy wind windy fog foggy mist misty haze hazy
weather lightning rainbow air fire flame flames smoke ash ice water waters ocean oceans sea seas lake lakes
river rivers stream creek pond waterfall waterfalls beach beaches shore coast sand sandy island islands
mountain mountains hill hills valley valleys cliff cliffs rock rocks rocky stone stones cave caves desert
deserts dune dunes forest forests jungle wood woods tree trees leaf branch branches root roots flower flowers
roses grass grassy field fields meadow meadows garden gardens park parks farm farms plant plants bush bushes
moss mud dirt dust earth ground land landscape landscapes nature world planet space galaxy universe horizon
sunbeam shadow shadows reflection reflections surface surfaces city cities town towns village villages street
streets road roads avenue alley highway bridge bridges tunnel buildings house houses home homes apartment room
rooms kitchen bedroom bathroom hall hallway corridor door doors window windows wall walls floor floors roof
ceiling stairs staircase tower towers castle castles palace temple church cathedral museum library school
office shop shops store market restaurant cafe bar hotel hospital station airport harbor port dock factory
warehouse skyline skyscraper skyscrapers rooftop neon sign signs lamp lamps lantern lanterns candle candles
fireplace table tables chair chairs sofa couch bed desk shelf shelves box boxes bag bags bottle bottles glass
glasses cup cups mug plate plates bowl bowls spoon fork knife book books paper papers letter pen pencil phone
phones screen screens computer laptop camera cameras television radio clock clocks mirror mirrors picture
pictures photo photos paintings map key keys ball balls toy toys gift umbrella hat hats coat coats jacket
shirt dress dresses shoes boots scarf gloves mask masks helmet armor sword swords shield gun guns bow arrow
rope chain wheel wheels engine machine machines tool tools guitar piano drum drums violin trumpet microphone
speaker speakers headphones car cars truck trucks bus buses train trains tram bike bicycle motorcycle boat
boats ship ships sail sails plane planes airplane jet helicopter rocket spaceship submarine taxi van vehicle
vehicles food bread cake cakes pie coffee tea milk juice wine beer soup rice pasta pizza burger salad fruit
fruits apple apples orange oranges lemon banana strawberry berries grapes cheese egg eggs meat steak chocolate
candy cream sugar salt honey day days night nights morning mornings evening afternoon noon midnight dawn dusk
twilight today tonight tomorrow yesterday week weeks month months year years hour hours minute minutes second
seconds moment moments time times season seasons spring summer autumn winter red yellow green blue purple
violet pink brown black white gray grey silver gold golden colorful color colors colour colours dark darker
darkness bright brighter brightness pale deep vivid vibrant warm warmer cold colder cool hot soft softer hard
gentle rough smooth sharp blurry blurred clear crisp glossy matte shiny wet dry clean dirty old older new
newer young ancient modern futuristic vintage retro classic rustic elegant beautiful pretty ugly handsome cute
lovely gorgeous stunning dramatic cinematic epic calm quiet loud silent noisy peaceful serene chaotic busy
empty full crowded lonely alone together happy sad angry scared afraid surprised excited tired curious
confused proud nervous worried joyful playful serious mysterious eerie spooky magical dreamy surreal realistic
natural artificial strange weird funny big bigger biggest small smaller smallest large larger largest huge
giant tiny little tall short long longer wide narrow thick thin heavy fast faster slow slower quick quickly
slowly high higher low lower far closer distant nearby fresh heavily strong weak rich poor main whole half
entire single double multiple several various different similar first third last next final early late real
true good better best bad worse worst great fine nice perfect simple complex tight loose steady shaky stable
wild tender subtle intense rapid sudden suddenly gradually softly gently lightly brightly darkly warmly
slightly fully nearly really barely quietly loudly smoothly steadily rapidly constantly briefly finally away
forward backward backwards upward upwards downward downwards sideways ahead apart indoors outdoors overhead
underwater right center centre middle top bottom front side sides edge edges corner corners end ends shot
shots scene scenes lens lenses angle angles view views closeup close-up wide-angle footage film films movie
movies video videos clip clips sequence sequences cut cuts transition transitions motion movement movements
action actions pov perspective foreground background midground depth bokeh exposure contrast saturation grain
texture textures tone tones palette backlit silhouette silhouettes glare flare handheld tripod drone aerial
static steadicam crane timelapse time-lapse slow-motion fps resolution aspect ratio portrait vertical
horizontal style styles animation animated cartoon anime illustration render rendered 3d 2d photorealistic
documentary noir mood atmosphere ambient ambience soundtrack music musical song songs melody rhythm beat beats
bass tune note notes chord chords orchestra orchestral choir dialogue narration narrator voiceover speech word
words sentence sentences language story stories noise noises silence footsteps applause laughter cheers
cheering engines traffic birdsong crickets two three four five six seven eight nine ten eleven twelve twenty
thirty hundred thousand million zero twice yes okay oh hello hi goodbye thanks please sorry because although
though unless whether however therefore instead perhaps maybe probably quite rather actually already soon
later now else whatever whenever wherever anyway kind kinds type types sort part parts piece pieces place
places thing things way ways line lines shape shapes form forms pattern patterns size level levels number
numbers lot lots bit bits area areas spaces detail details element elements object objects item items layer
layers row rows set sets series pair pairs life lives death love hope dream dreams fear joy peace war power
energy force magic spirit soul mind idea ideas memory memories question answer problem reason result fact
truth history future present country nation state government money price business job work game games sport
sports match party art science health care able accept accident account act active activity actor actress add
address admire adult advance adventure advice afford age agency agent agree agreement aim alarm album alive
allow amazing amount anger announce annual another anxious appeal appearance apply appreciate argue argument
arrange arrangement arrival article aside ask asks asked asking asleep assist attack attempt attend attention
attitude attract audience author available average avoid awake award aware awkward badly bake bakes baking
baked balance balcony band bank barn base basic basket bath battle beard beautifully beauty beef beginner
belief believe bell belong belt bench benefit berry bet bill billion bind birth birthday bite bitter blade
blame blank blanket blind block blonde board boil bold bomb bond border bored boring born borrow boss bother
brain brave breakfast brick bride brief brilliant bring brings bringing brought broad brush bubble bubbles
bucket budget bug bull bullet bunch burst bury butter button buy buys buying bought cabin cable calendar camp
campaign canal cap capital captain card cards career careful carefully carpet case cash cause celebrate cell
century certain certainly chalk challenge champion chance channel chapter charge charm cheap check cheerful
chest chew chief childhood choice choose chooses chose chosen citizen claim class clearly clerk clever client
climate clinic cloth clothes clothing club coach coal code coin collar collect college column combine comfort
comfortable command comment common company compare complete completely concern concert condition confident
connect consider construct contact continue control conversation copper copy corn correct cost costume cottage
cotton cough count counter county courage course court cousin crack craft crazy create creative credit crew
crime critic crop crown crush cultural culture curtain curtains curve custom customer cycle daily damage damp
danger dangerous dare data date deal dear debate decade decide decision decorate decoration defend degree
delay deliver demand dentist deny depend describe design desire destroy develop device diamond diary die dies
died dying diet difference difficult dig dinner direct direction directly director discover discuss disease
dish distance divide document dollar domestic dot doubt dough dozen drag drain drama drawer drill duty eager
east eastern easy economy edition editor educate effect effort either elbow elder election electric
electricity electronic elevator email emergency emotion emotional employ enemy engage enjoy enormous entrance
envelope environment equal equipment error escape especially essay estate event events eventually evidence
exact exactly exam example excellent exchange excuse exercise exhibit exist expand expect expensive experience
expert explain explode explosion express extra extreme fabric facility factor fail failure fair fairly faith
false fame familiar famous fan fancy fantasy fare fashion fat fault favorite favourite feast fee female fence
festival fever fiction fierce file finance finish fit fix flag flash flat flavor fleet flesh flight flood
flour fluid fold folk fond fool football forever forget forgive formal former fortune free freedom frequent
fridge friendly friendship frighten fuel fun function funeral furniture gain gallery gap gas gate gather gear
general generous gentleman ghost glance glory goal god goods govern grade grand grandfather grandmother
grandparents grant grateful grave greet grin grip grocery guess guest guide guilty habit haircut hammer handle
happen happens happened happily harbour hardly harm harvest hate heal heat heaven height helpful highly hire
historic hobby hole holiday hollow holy honest honor hook horror host human humor hunger hungry hunt hunter
hurt ideal ignore ill image imagine immediately impact import important impossible impress improve incident
income increase indeed independent industry influence inform information injury ink inner innocent insist
instance instrument intend interest interested interesting interior internal international internet interview
introduce invent invite iron issue jar jaw jewel jewelry join joke journey judge jug junior justice keen
kettle kick kill kindly kit knit knot label labor ladder lady lamb lap laser latest laundry law lawn lawyer
lazy leader league leather lecture legal lend length lesson lid limb limit link lip liquid list live lived
living load loan local lock log loop lord lorry loss lounge lover loving luck lucky lunch mad magazine mail
major majority male manage manager manner marble mark marriage married marry mass massive master mat material
matter meal mean means meaning measure medal medical medicine medium member mental mention menu mere merely
mess message metal method mild mile mill mineral minor miracle miss mission mistake mix mixed mixture mobile
model moderate monster moral motor mount muscle mushroom mystery nail name national native navy neat necessary
needle negative nerve nest net network noble nod normal north northern notice novel nut obvious obviously
occasion odd offer official oil ordinary organize origin original otherwise oven owner oxygen pack package
page pain painful palm panel panic parade particular partly partner passage passenger passion path patient
pause pay peak pearl penny pepper perform perfume period permit personal phrase physical pick picnic pile
pillow pin pine pipe pitch plain plan plastic platform plenty plot pocket poem poet poetry pole polite
political pool pop popular population portion position positive possible post pot potato pound powder practice
praise pray prayer prefer prepare president press pressure pretend prevent pride print prison prisoner private
prize process produce product profession program project promise proper property protect protest prove provide
public pump pupil purchase pure purpose purse pursue puzzle quality quantity quarter queue quit quote rail
railway raise range rank rare rarely rate raw reader ready reality realize rear receive recent recently recipe
recognize recommend recover reduce refuse regard region regular reject relate relationship relax release
relief religion remind remove rent repair repeat replace reply report represent request require rescue
research reserve resident resist resource respect respond rest rid ridge rifle risk rival roast rob role round
route routine royal rub rubber rude ruin rule ruler rural sack safe safety sale sample satisfy sauce save
saves saving saved scale scar scare schedule scheme score scratch scream search seat secret section secure
seed seek select sell sells selling sold send sends sending sent senior sense sensitive separate servant serve
service session settle severe sew sex shade shallow shame share sheet shell shelter shift shock shoe shoot
shower shut shy sick sight signal silk silly sink sir site situation skill skirt slice slide slight slip slope
smart smell snack soap social society sock soil solid solution solve sore source south southern spare special
speed spell spend spends spending spent spice spite split spoil spot spray spread square squeeze staff stage
stair stamp standard stare statue steal steam steel steep step stick sticky stiff sting stir stock stomach
straight straw strength stress strike string stripe stroke structure struggle studio study stuff subject
succeed success successful suck suffer suggest suit suitable summit sunny supper supply support suppose sure
surprise survive suspect swallow swear sweet swing switch symbol system tale talent tank tap tape target task
taste tax teach teaches teaching taught tear technology teen teenager telephone temperature tent term terrible
test text theater theatre theme theory thief thirsty threat throat thumb ticket tidy tie tip tire title toast
toe tooth topic total tough tour towel trade tradition traditional trail trap travel travels traveling
travelled traveled tray treat treatment trend trial trick trip trouble trousers trust tube twin twist typical
tyre unable uncle understand understood uniform union unique unit unite university unknown unusual upper upset
urban urge usual usually valuable value vast vegetable version vessel victim victory violent visible vision
visit visitor visual vital volume vote wage waist waiter warn wash waste wealth weapon web wedding weekend
weigh weight welcome west western whistle widely willing wire wise wish witness wonder wonderful wooden wool
working worry worth wound wrap wrist yard yell youth zone
"""


# Word pieces: suffixes, prefixes and common letter groups. They only continue a word (no leading
# space), so a word outside WORDS still costs a few tokens rather than one per letter.
PIECES = """
s es ed ing ly er ers est tion tions sion ness ment ments ful less able ible al ial ous ive ity ize ized ise
ance ence ant ent ism ist ists ic ical y ies ier iest d t re un dis non pre pro n't 're 've 'll 'd 'm 's th he
in an on at en nd ti or te of is it ar st to nt ng se ha as ou io le ve co me de hi ri ro ne ea ra ce li ch ll
be ma si om ur ca el ta la ns ge ei os no pe do su pa ec ac ot di ol tr sh ad wa mo ia ct ow pl bl cl cr fl fr
gl gr pr sc sk sl sm sn sp sw tw wh qu ck ph oo ee ai ay ey oy au aw ew ui ie oa ue
"""
